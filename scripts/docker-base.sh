#!/usr/bin/env bash
# Make sure the Docker engine has the image's base, debian:bookworm-slim: pulled when Docker Hub
# answers, otherwise a stand-in made here from Debian's own packages with
# `debootstrap --variant=minbase bookworm` and `docker import`, slimmed the way the official
# -slim images are (no documentation, man pages or translations, for later packages too). The
# stand-in stays in the engine's image store under that tag, so later builds reuse it; remove
# the tag (docker rmi) to make it again.
# Usage: scripts/docker-base.sh [IMAGE]      (default debian:bookworm-slim; needs root for debootstrap)
set -euo pipefail
IMAGE="${1:-debian:bookworm-slim}"
MIRROR="${PAGECAST_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi
if timeout 60 docker pull -q "$IMAGE" >/dev/null 2>&1; then exit 0; fi

echo "docker-base: cannot pull $IMAGE, making a stand-in with debootstrap" >&2
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
root="$(mktemp -d /var/tmp/pagecast-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/dev/null

# The official image's apt sources: the release, its updates and security fixes.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# Where HTTPS leaves this machine through an intercepting proxy, its CA certificates must be
# trusted inside the build too (pip reaches PyPI over TLS): the ca-certificates package the
# image installs picks them up from /usr/local/share/ca-certificates, and pip is told to use
# the system bundle instead of its own. On a machine without such a CA this adds nothing.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
fi

# The -slim images' dpkg filter (debuerreotype's slimify), for every package the image adds
# later; what debootstrap installed already is removed below.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
# Like the official images, apt keeps no downloaded packages and no translations in a layer.
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
slim=("$root/usr/share/info" "$root/usr/share/linda" "$root/usr/share/lintian/overrides"
    "$root/usr/share/locale" "$root/usr/share/man")
[[ "$root" == /var/tmp/pagecast-base.?* ]] || exit 1  # never delete outside the new root
find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
for dir in "${slim[@]}"; do
    if [[ -d "$dir" ]]; then find "$dir" -mindepth 1 -delete; fi
done

chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
tar -C "$root" --numeric-owner -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'LABEL org.pagecast.stand-in="debootstrap --variant=minbase bookworm"' \
    - "$IMAGE" >/dev/null
echo "docker-base: $IMAGE is a debootstrap stand-in" >&2
