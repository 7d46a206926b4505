#!/bin/sh
# GET  /cgi-bin/file?/path  -> the file's content (404 when absent)
# POST /cgi-bin/file?/path  -> writes the body to the file (and syncs)
# /path is on the system disk (mounted at /disk); /mnt/NAME/... is on the extra disk whose
# serial is NAME (mounted on first use, formatted when blank, remounted after a re-attach).
p="$QUERY_STRING"
case "$p" in
  /*) ;;
  *) printf 'Status: 400\r\nContent-Type: text/plain\r\n\r\nbad path\n'; exit 0 ;;
esac
case "$p" in
  *..*|*[!A-Za-z0-9._/-]*) printf 'Status: 400\r\nContent-Type: text/plain\r\n\r\nbad path\n'; exit 0 ;;
esac
case "$p" in
  /mnt/*/*)
    rest=${p#/mnt/}; name=${rest%%/*}; dev=""; id=""
    for i in $(seq 1 50); do  # a disk hot-plugged a moment ago may still be on its way
      for s in /sys/block/vd*/serial; do
        [ -e "$s" ] && [ "$(cat "$s")" = "$name" ] && { b=${s%/serial}; dev=/dev/${b##*/}; id=$(cat "$b/diskseq"); }
      done
      [ -n "$dev" ] && [ -b "$dev" ] && break
      sleep 0.2
    done
    [ -n "$dev" ] || { printf 'Status: 404\r\nContent-Type: text/plain\r\n\r\nno disk %s\n' "$name"; exit 0; }
    # a re-attached disk is a new block device (maybe with the old name, never the old diskseq): remount
    if grep -q " /mnt/$name " /proc/mounts && [ "$(cat "/run/mnt-$name" 2>/dev/null)" != "$dev $id" ]; then
      umount -l "/mnt/$name"
    fi
    if ! grep -q " /mnt/$name " /proc/mounts; then
      mkdir -p "/mnt/$name"
      mount -t ext4 "$dev" "/mnt/$name" 2>/dev/null || { mke2fs -q "$dev" && mount -t ext4 "$dev" "/mnt/$name"; }
      echo "$dev $id" > "/run/mnt-$name"
    fi
    f="$p" ;;
  *) f="/disk$p" ;;
esac
if [ "$REQUEST_METHOD" = POST ]; then
  mkdir -p "$(dirname "$f")"
  head -c "${CONTENT_LENGTH:-0}" > "$f"
  sync
  printf 'Content-Type: text/plain\r\n\r\nok\n'
elif [ -f "$f" ]; then
  printf 'Content-Type: text/plain\r\n\r\n'
  cat "$f"
else
  printf 'Status: 404\r\nContent-Type: text/plain\r\n\r\nabsent\n'
fi
