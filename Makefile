# Makefile for otp_link (PGXS)
#
#   make && make install          build and install into the pg_config found
#   make installcheck             regression + isolation + TAP tests, each on a
#                                 throw-away cluster started by the test driver

EXTENSION = otp_link
MODULE_big = otp_link
DATA = otp_link--1.0.sql otp_link--1.1.sql otp_link--1.0--1.1.sql
PGFILEDESC = "otp_link - WhatsApp OTP links inside PostgreSQL"

SRCS = $(wildcard src/*.c)
OBJS = $(SRCS:.c=.o)

PG_CONFIG ?= pg_config
PKG_CONFIG ?= pkg-config

PG_CPPFLAGS = -I$(srcdir)/src $(shell $(PKG_CONFIG) --cflags libcurl)
SHLIB_LINK = $(shell $(PKG_CONFIG) --libs libcurl)
# SHA-256 through OpenSSL's EVP interface when PostgreSQL uses OpenSSL
# (src/code.c); nothing when there is no libcrypto.pc
SHLIB_LINK += $(shell $(PKG_CONFIG) --silence-errors --libs libcrypto)

# pg_regress: its own cluster, with the library preloaded
REGRESS = generate errors roles signature stats security consume trigger webhook gateways gateway_signatures redeem expire replies instances ssrf attacks worker_warning click gateway_replies prometheus
REGRESS_OPTS = --temp-config=$(srcdir)/test/otp_link.conf \
	--temp-instance=$(CURDIR)/tmp_check_regress \
	--inputdir=$(srcdir)

ISOLATION = concurrent_generate consume_race message_id_race expire_concurrent instance_update rate_limit unknown_code_burst limits_race
ISOLATION_OPTS = --temp-config=$(srcdir)/test/otp_link.conf \
	--temp-instance=$(CURDIR)/tmp_check_iso \
	--inputdir=$(srcdir)

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_check_regress tmp_check_iso output_iso results regression.diffs regression.out

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object depends on every header (PGXS tracks them only when
# PostgreSQL was configured with --enable-depend): a changed struct must
# rebuild all its users
$(OBJS): $(wildcard $(srcdir)/src/*.h)
