// Texts in English and Chinese. The choice is remembered (localStorage); the browser's language first.
import { signal } from './state.js';

const LANG_KEY = 'idcs.lang';

const en = {
  app: 'OpenIDCS', login: 'Log in', logout: 'Log out', username: 'User name', password: 'Password',
  language: '中文', theme: 'Theme', light: 'Light', dark: 'Dark',
  dashboard: 'Dashboard', hosts: 'Hosts', vms: 'Virtual machines', users: 'Users', settings: 'Settings',
  audit: 'Audit log', tasks: 'Tasks', my_vms: 'My virtual machines', menu: 'Menu',
  hosts_online: 'Hosts online', hosts_offline: 'Hosts offline', vms_count: 'VMs', users_count: 'Users',
  cpu: 'CPU', memory: 'Memory', disk: 'Disk', usage: 'Usage', usage_note: 'last hour',
  name: 'Name', type: 'Type', address: 'Address', status: 'Status', actions: 'Actions', online: 'online',
  offline: 'offline', add_host: 'Add host', edit: 'Edit', save: 'Save', cancel: 'Cancel', delete: 'Delete',
  test: 'Test', scan: 'Scan', open: 'Open', close: 'Close', open_for_vms: 'Open for new VMs',
  closed_for_vms: 'Closed for new VMs', server_user: 'User', server_pass: 'Password', engine: 'Engine',
  engine_options: 'Engine options', ports_start: 'NAT ports from', ports_close: 'NAT ports to',
  public_addr: 'Public address', area: 'Area', create_vm: 'Create VM', host: 'Host', image: 'Image',
  cpu_num: 'CPUs', ram_num: 'RAM (MB)', hdd_num: 'Disk (GB)', owner: 'Owner', vm_name: 'Name',
  os_pass: 'Root password (optional)', power: 'Power', start: 'Start', stop: 'Power off', restart: 'Restart',
  pause: 'Pause', resume: 'Resume', reinstall: 'Reinstall', resize: 'Resize', confirm: 'Confirm',
  confirm_delete: 'Delete {name}? This cannot be undone.', confirm_reinstall: 'Reinstall {name}? Its system disk is wiped.',
  confirm_restore: 'Restore {name} from backup {backup}? Changes since then are lost.',
  overview: 'Overview', network: 'Network', storage: 'Storage', backups: 'Backups', console: 'Console',
  terminal: 'Terminal', open_terminal: 'Open terminal', open_console: 'Open graphical console',
  no_console: 'This engine offers no graphical console for this VM.', set_password: 'Set password',
  new_password: 'New password', password_set: 'Password set', nat_rules: 'NAT rules', host_port: 'Host port',
  vm_port: 'VM port', protocol: 'Protocol', add_rule: 'Add rule', auto_port: 'empty: pick a free port',
  port_free: 'Port {port} is free', port_taken: 'Port {port} is taken', check: 'Check', proxies: 'Reverse proxies',
  domain: 'Domain', add_proxy: 'Add proxy', ips: 'IP addresses', add_ip: 'Add IP', disks: 'Disks',
  disk_name: 'Disk name', disk_size: 'Size (GB)', mount: 'Attach', unmount: 'Detach', isos: 'ISO images',
  iso_name: 'ISO', mount_iso: 'Mount ISO', create_backup: 'Create backup', description: 'Description',
  restore: 'Restore', backup_name: 'Backup', created: 'Created', nothing: 'Nothing here yet.',
  loading: 'Loading…', refresh: 'Refresh', task: 'Task', progress: 'Progress', message: 'Message',
  kind: 'Kind', target: 'Target', state: 'State', time: 'Time', user: 'User', action: 'Action',
  outcome: 'Outcome', detail: 'Detail', filter: 'Filter', all: 'All', email: 'Email', admin: 'Administrator',
  role: 'Role', customer: 'Customer', add_user: 'Add user', quota: 'Quota', max_vms: 'VMs', max_cpu: 'CPUs',
  max_ram: 'RAM (MB)', max_hdd: 'Disk (GB)', max_nat: 'NAT rules', max_ips: 'IPs', max_backups: 'Backups',
  unlimited: '-1 = unlimited', api_token: 'Global API token', reset: 'Reset', show: 'Show', hide: 'Hide',
  saved: 'Saved', done: 'Done', failed: 'Failed', running: 'running', stopped: 'stopped', paused: 'paused',
  creating: 'creating', deleting: 'deleting', temp_session: 'Temporary access to one VM',
  select_host: 'Choose a host', back: 'Back', engines: 'Engines', value: 'Value', setting: 'Setting',
  no_hosts: 'No host yet: add one.', vm_of: 'VMs of {host}', power_done: '{action}: done',
  recalc: 'Recount quotas', confirm_delete_host: 'Delete host {name}? Its VM records are forgotten.',
  tcp: 'TCP', udp: 'UDP', history_empty: 'No samples yet.', change_password: 'Change my password',
  old_password: 'Current password', attached: 'attached', detached: 'detached', limit: 'Entries', port_range: 'Ports of this host: {from}–{to}', pending: 'pending', success: 'success', unknown: 'unknown', plan: 'Plan', yes: 'yes', no: 'no', capabilities: 'Capabilities',
  tokens: 'API tokens', create_token: 'Create token', profile: 'Profile', expires_in_days: 'Expires after (days)',
  never_expires: 'empty: never expires', scopes: 'Scopes', scopes_hint: 'none ticked: everything an administrator may do',
  'scope_read-only': 'read only', scope_hosts: 'hosts', scope_vms: 'VMs', scope_all: 'everything',
  token_once: 'Copy this secret now: it is shown only this once and cannot be read again.',
  tokens_note: 'Named tokens for billing modules; each speaks its profile\'s dialect. Secrets are stored hashed.',
  token_prefix: 'Starts with', expires: 'Expires', last_used: 'Last used', revoked: 'revoked', active: 'active',
  revoke: 'Revoke', confirm_revoke: 'Revoke token {name}? Modules using it stop working at once.',
  host_grants: 'Hosts', grants_of: 'Hosts {name} may create VMs on', grant: 'Grant', granted: 'granted',
  host_name_hint: 'the host name your provider gave you', not_granted: 'not granted', grants_note: 'A customer creates VMs only on the hosts granted here; their VMs stay when a host is taken back.',

};

const zh = {
  app: 'OpenIDCS', login: '登录', logout: '退出登录', username: '用户名', password: '密码',
  language: 'English', theme: '主题', light: '浅色', dark: '深色',
  dashboard: '仪表盘', hosts: '主机', vms: '虚拟机', users: '用户', settings: '设置',
  audit: '审计日志', tasks: '任务', my_vms: '我的虚拟机', menu: '菜单',
  hosts_online: '在线主机', hosts_offline: '离线主机', vms_count: '虚拟机数', users_count: '用户数',
  cpu: 'CPU', memory: '内存', disk: '磁盘', usage: '使用率', usage_note: '最近一小时',
  name: '名称', type: '类型', address: '地址', status: '状态', actions: '操作', online: '在线',
  offline: '离线', add_host: '添加主机', edit: '编辑', save: '保存', cancel: '取消', delete: '删除',
  test: '测试连接', scan: '扫描', open: '开放', close: '关闭', open_for_vms: '开放新建虚拟机',
  closed_for_vms: '已停止新建虚拟机', server_user: '用户', server_pass: '密码', engine: '引擎',
  engine_options: '引擎选项', ports_start: 'NAT 起始端口', ports_close: 'NAT 结束端口',
  public_addr: '公网地址', area: '区域', create_vm: '创建虚拟机', host: '主机', image: '镜像',
  cpu_num: 'CPU 核数', ram_num: '内存 (MB)', hdd_num: '硬盘 (GB)', owner: '所有者', vm_name: '名称',
  os_pass: 'root 密码（可选）', power: '电源', start: '开机', stop: '强制关机', restart: '重启',
  pause: '暂停', resume: '恢复', reinstall: '重装系统', resize: '调整配置', confirm: '确认',
  confirm_delete: '删除 {name}？此操作无法撤销。', confirm_reinstall: '重装 {name}？系统盘数据将被清除。',
  confirm_restore: '用备份 {backup} 还原 {name}？之后的更改将丢失。',
  overview: '概览', network: '网络', storage: '存储', backups: '备份', console: '控制台',
  terminal: '终端', open_terminal: '打开终端', open_console: '打开图形控制台',
  no_console: '此引擎不为该虚拟机提供图形控制台。', set_password: '设置密码',
  new_password: '新密码', password_set: '密码已设置', nat_rules: 'NAT 端口转发', host_port: '主机端口',
  vm_port: '虚拟机端口', protocol: '协议', add_rule: '添加规则', auto_port: '留空：自动分配空闲端口',
  port_free: '端口 {port} 空闲', port_taken: '端口 {port} 已被占用', check: '检查', proxies: '反向代理',
  domain: '域名', add_proxy: '添加代理', ips: 'IP 地址', add_ip: '添加 IP', disks: '数据盘',
  disk_name: '磁盘名称', disk_size: '容量 (GB)', mount: '挂载', unmount: '卸载', isos: 'ISO 镜像',
  iso_name: 'ISO', mount_iso: '挂载 ISO', create_backup: '创建备份', description: '备注',
  restore: '还原', backup_name: '备份', created: '创建时间', nothing: '暂无内容。',
  loading: '加载中…', refresh: '刷新', task: '任务', progress: '进度', message: '消息',
  kind: '类型', target: '对象', state: '状态', time: '时间', user: '用户', action: '动作',
  outcome: '结果', detail: '详情', filter: '筛选', all: '全部', email: '邮箱', admin: '管理员',
  role: '角色', customer: '客户', add_user: '添加用户', quota: '配额', max_vms: '虚拟机', max_cpu: 'CPU',
  max_ram: '内存 (MB)', max_hdd: '硬盘 (GB)', max_nat: 'NAT 规则', max_ips: 'IP', max_backups: '备份',
  unlimited: '-1 表示不限', api_token: '全局 API 令牌', reset: '重置', show: '显示', hide: '隐藏',
  saved: '已保存', done: '完成', failed: '失败', running: '运行中', stopped: '已停止', paused: '已暂停',
  creating: '创建中', deleting: '删除中', temp_session: '临时访问（仅限一台虚拟机）',
  select_host: '选择主机', back: '返回', engines: '引擎', value: '值', setting: '设置项',
  no_hosts: '还没有主机，请先添加。', vm_of: '{host} 上的虚拟机', power_done: '{action}：完成',
  recalc: '重新统计配额', confirm_delete_host: '删除主机 {name}？其虚拟机记录将被移除。',
  tcp: 'TCP', udp: 'UDP', history_empty: '暂无采样。', change_password: '修改我的密码',
  old_password: '当前密码', attached: '已挂载', detached: '未挂载', limit: '条数', port_range: '本主机可用端口：{from}–{to}', pending: '等待中', success: '成功', unknown: '未知', plan: '套餐', yes: '是', no: '否', capabilities: '能力',
  tokens: 'API 令牌', create_token: '创建令牌', profile: '客户端类型', expires_in_days: '有效期（天）',
  never_expires: '留空：永不过期', scopes: '权限范围', scopes_hint: '都不勾选：拥有管理员的全部权限',
  'scope_read-only': '只读', scope_hosts: '主机', scope_vms: '虚拟机', scope_all: '全部',
  token_once: '请立即复制此密钥：它只显示这一次，之后无法再查看。',
  tokens_note: '供计费模块使用的命名令牌，按各自的客户端类型应答。密钥仅以哈希形式保存。',
  token_prefix: '开头', expires: '过期时间', last_used: '最近使用', revoked: '已吊销', active: '有效',
  revoke: '吊销', confirm_revoke: '吊销令牌 {name}？使用它的模块将立即失效。',
  host_grants: '主机授权', grants_of: '{name} 可创建虚拟机的主机', grant: '授权', granted: '已授权',
  host_name_hint: '服务商提供的主机名称', not_granted: '未授权', grants_note: '客户只能在此处授权的主机上创建虚拟机；收回授权后其已有虚拟机保留。',

};

const dictionaries = { en, zh };

function initial() {
  const saved = localStorage.getItem(LANG_KEY);
  if (saved && dictionaries[saved]) return saved;
  const browser = (navigator.languages && navigator.languages[0]) || navigator.language || 'en';
  return browser.toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

export const lang = signal(initial());
document.documentElement.lang = lang.value === 'zh' ? 'zh-CN' : 'en';

export function setLang(value) {
  localStorage.setItem(LANG_KEY, value);
  document.documentElement.lang = value === 'zh' ? 'zh-CN' : 'en';
  lang.value = value;
}

/** The text of ``key`` in the current language, with {placeholders} filled in. */
export function t(key, vars) {
  let text = dictionaries[lang.value][key] ?? en[key] ?? key;
  if (vars) for (const [k, v] of Object.entries(vars)) text = text.replaceAll(`{${k}}`, String(v));
  return text;
}
