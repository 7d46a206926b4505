#!/bin/sh
# What the guest sees of itself: CPUs, memory, boot marker.
printf 'Content-Type: text/plain\r\n\r\n'
echo "cpus $(nproc)"
echo "mem_kb $(awk '/MemTotal/ {print $2}' /proc/meminfo)"
echo "marker $(cat /disk/idcs-boot-marker 2>/dev/null)"
echo "boots $(cat /disk/idcs-boot-count 2>/dev/null)"
