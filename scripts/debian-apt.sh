# Sourced by scripts that fetch Debian packages for another release or
# architecture than the host's: apt options that point apt-get and
# apt-cache at a source list and package lists of their own, so the
# system's apt sources and lists are left as they are.
#
#   debian_apt_opts DIR ARCH 'deb ...' ...
#
# prints one option a line (for mapfile); DIR holds the lists and the
# cache; ARCH is a Debian architecture (amd64, arm64).
debian_apt_opts() {
	local d=$1 arch=$2
	shift 2
	d=$(realpath -m "$d")
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
	printf '%s\n' "$@" > "$d/sources.list"
	printf '%s\n' -o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
		-o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" \
		-o "APT::Architecture=$arch" -o "APT::Architectures=$arch" \
		-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
		-o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false
}

# debian_bookworm_arm64 DIR: the options for Debian 12's arm64 packages.
debian_bookworm_arm64() {
	debian_apt_opts "$1" arm64 \
		'deb [arch=arm64] http://deb.debian.org/debian bookworm main' \
		'deb [arch=arm64] http://deb.debian.org/debian-security bookworm-security main'
}

# debian_download DIR PKG [APT_OPTION...]: apt-get download PKG into DIR,
# updating the lists once if they name a file the mirror dropped.
debian_download() {
	local dir=$1 pkg=$2
	shift 2
	_debian_download() {
		# Only the .deb tells whether it worked (apt warns when _apt cannot write there).
		(cd "$dir" && apt-get "$@" download -q "$pkg" 2>&1) | grep -v '^W: Download is performed unsandboxed' >&2 || true
		[ -n "$(find "$dir" -maxdepth 1 -name "${pkg%%[:=]*}_*.deb")" ]
	}
	_debian_download "$@" || { apt-get "$@" update -qq >&2 && _debian_download "$@"; }
}

# btf_from_image IMAGE OUT: the kernel's BTF blob (.BTF), found in a
# kernel image (raw, or gzip'd as arm64's vmlinuz may be) by its header:
# magic 0xeb9f, version 1, flags 0, hdr_len 24, then type_off 0, type_len,
# str_off = type_len, str_len.
btf_from_image() {
	local img=$1 out=$2 raw off to tl so sl
	raw=$img
	if [ "$(od -An -tx1 -N2 "$img" | tr -d ' ')" = 1f8b ]; then
		raw=$out.image
		gzip -dc "$img" > "$raw"
	fi
	for off in $(LC_ALL=C grep -obUaP '\x9f\xeb\x01\x00\x18\x00\x00\x00' "$raw" | cut -d: -f1); do
		read -r to tl so sl < <(od -An -tu4 -j $((off + 8)) -N16 "$raw")
		if [ "$to" -eq 0 ] && [ "$so" -eq "$tl" ] && [ "$tl" -gt 1000000 ]; then
			tail -c +$((off + 1)) "$raw" | head -c $((24 + tl + sl)) > "$out"
			[ "$raw" = "$img" ] || rm -f "$raw"
			return 0
		fi
	done
	[ "$raw" = "$img" ] || rm -f "$raw"
	echo "no BTF found in $img" >&2
	return 1
}
