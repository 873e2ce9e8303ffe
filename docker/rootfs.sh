#!/usr/bin/env bash
# Lays out the root filesystem of the Squall runtime image in OUT from the
# `coordinator` and `worker` binaries in BIN_DIR. Both image builds use it:
# docker/Dockerfile (in its Rust build stage) and docker/build-image.sh (on
# the host, offline), so the two images have the same layout:
#
#   /usr/local/bin/{coordinator,worker}   stripped, dynamically linked against glibc
#   the shared libraries `ldd` lists      at the paths the loader looks in
#   /etc/passwd, /etc/group               root and the non-root user squall (10001:10001)
#   /etc/nsswitch.conf                    hosts: files dns (glibc >= 2.34 has both built in)
#   /etc/ssl/certs/ca-certificates.crt    CA roots, for https:// targets and TLS tooling
#   /tmp                                  world-writable (sticky)
#   /work, /data                          laid out apart, in OUT_DIR.owned, and given to
#                                         squall by the image build (COPY --chown: only
#                                         directories that COPY creates take its owner);
#                                         the working directory and serve mode's --data
#                                         (a named volume mounted there starts as squall's)
#
# No shell, no package manager, no other program.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BIN_DIR OUT_DIR" >&2
    exit 2
fi
bin_dir=$1
out=$2

for tool in ldd strip install; do
    command -v "$tool" >/dev/null 2>&1 || { echo "rootfs.sh: $tool is needed" >&2; exit 2; }
done
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || { echo "rootfs.sh: $ca is missing (install the ca-certificates package)" >&2; exit 2; }

owned=$out.owned
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp" "$owned/work" "$owned/data"
for b in coordinator worker; do
    [ -x "$bin_dir/$b" ] || { echo "rootfs.sh: $bin_dir/$b is missing: build it first" >&2; exit 2; }
    install -m 0755 "$bin_dir/$b" "$out/usr/local/bin/$b"
    strip --strip-all "$out/usr/local/bin/$b"
done

# Every library the binaries load, at the path the loader resolves it to:
# lines are `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
# `/lib64/ld-linux-x86-64.so.2 (0x...)`; linux-vdso has no file.
libs=$(ldd "$bin_dir/coordinator" "$bin_dir/worker" \
    | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u)
if [ -z "$libs" ]; then
    echo "rootfs.sh: ldd listed no libraries; is $bin_dir/coordinator a dynamic ELF binary?" >&2
    exit 2
fi
for lib in $libs; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
done

cat > "$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
squall:x:10001:10001:squall:/work:/sbin/nologin
PASSWD
cat > "$out/etc/group" <<'GROUP'
root:x:0:
squall:x:10001:
GROUP
# glibc 2.34+ has the files and dns NSS modules inside libc.so.6, so this is
# all name resolution needs (Docker and Kubernetes mount /etc/hosts and
# /etc/resolv.conf); no libnss_*.so is copied.
cat > "$out/etc/nsswitch.conf" <<'NSS'
passwd: files
group:  files
hosts:  files dns
NSS
cp -L "$ca" "$out/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$out/tmp"
chmod 0755 "$owned/work" "$owned/data"    # the image build gives them to squall (COPY --chown)
