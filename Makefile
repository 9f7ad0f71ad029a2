# Builds, installs and packages vmd and vmctl.
#
#   make                    build the release binaries (cargo)
#   make install            install them with their manual pages, the
#                           systemd unit, the shell completions and an
#                           example /etc/vm.conf, and create the user _vmd
#   make deb                make target/debian/vmd_<version>_<arch>.deb
#
# DESTDIR stages the installation in a directory (nothing is done to the
# system then: no user, no /etc/vm.conf check against the running one).
# BINDIR names the directory the binaries are taken from (default: cargo's
# release directory); DEBDIR where the package is made.

PREFIX ?= /usr
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/vmd
SYSCONFDIR ?= /etc
UNITDIR ?= /lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d

CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BINDIR ?= $(TARGET_DIR)/release
DEBDIR ?= $(TARGET_DIR)/debian

VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB := $(DEBDIR)/vmd_$(VERSION)_$(ARCH).deb

INSTALL ?= install

all: $(BINDIR)/vmd $(BINDIR)/vmctl

$(BINDIR)/vmd $(BINDIR)/vmctl:
	$(CARGO) build --release --bin vmd --bin vmctl

install: all
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR)/examples \
		$(DESTDIR)$(SYSCONFDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) \
		$(DESTDIR)$(FISHCOMPDIR)
	$(INSTALL) -m 0755 $(BINDIR)/vmd $(BINDIR)/vmctl $(DESTDIR)$(SBINDIR)/
	$(INSTALL) -m 0644 man/vm.conf.5 $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -m 0644 man/vmctl.8 man/vmd.8 $(DESTDIR)$(MANDIR)/man8/
	$(INSTALL) -m 0644 dist/vmd.service $(DESTDIR)$(UNITDIR)/vmd.service
	$(INSTALL) -m 0644 completions/vmctl.bash $(DESTDIR)$(BASHCOMPDIR)/vmctl
	$(INSTALL) -m 0644 completions/_vmctl $(DESTDIR)$(ZSHCOMPDIR)/_vmctl
	$(INSTALL) -m 0644 completions/vmctl.fish $(DESTDIR)$(FISHCOMPDIR)/vmctl.fish
	$(INSTALL) -m 0644 docs/status-json-schema.json dist/copyright $(DESTDIR)$(DOCDIR)/
	$(INSTALL) -m 0644 dist/vm.conf $(DESTDIR)$(DOCDIR)/examples/vm.conf
	# An existing configuration is kept.
	[ -e $(DESTDIR)$(SYSCONFDIR)/vm.conf ] || \
		$(INSTALL) -m 0644 dist/vm.conf $(DESTDIR)$(SYSCONFDIR)/vm.conf
	[ -n "$(DESTDIR)" ] || sh dist/postinst configure

# The package is `make install` staged in a directory, plus the control
# files; binaries stripped and man pages compressed as Debian does.
deb: all
	rm -rf $(DEBDIR)/root
	$(MAKE) install DESTDIR=$(abspath $(DEBDIR))/root PREFIX=/usr SYSCONFDIR=/etc \
		UNITDIR=/lib/systemd/system BINDIR=$(abspath $(BINDIR))
	strip --strip-unneeded $(DEBDIR)/root/usr/sbin/vmd $(DEBDIR)/root/usr/sbin/vmctl
	gzip -9n $(DEBDIR)/root/usr/share/man/man5/*.5 $(DEBDIR)/root/usr/share/man/man8/*.8
	$(INSTALL) -d $(DEBDIR)/root/DEBIAN
	$(INSTALL) -m 0755 dist/postinst dist/prerm dist/postrm $(DEBDIR)/root/DEBIAN/
	echo /etc/vm.conf > $(DEBDIR)/root/DEBIAN/conffiles
	sed -e 's/@VERSION@/$(VERSION)/' -e 's/@ARCH@/$(ARCH)/' \
		-e "s/@SIZE@/$$(du -sk --exclude=DEBIAN $(DEBDIR)/root | cut -f1)/" \
		dist/control > $(DEBDIR)/root/DEBIAN/control
	dpkg-deb --root-owner-group -Zxz --build $(DEBDIR)/root $(DEB)

.PHONY: all install deb
