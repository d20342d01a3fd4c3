#!/usr/bin/env python3
#
# test/meta_check.py: validate META.json against the PGXN Meta Spec v1.0.0
# (https://pgxn.org/spec/), and against this tree.
#
#   test/meta_check.py [META.json]      prints the problems; exit 1 if any
#   test/meta_check.py --self-test      also checks that broken copies of
#                                       META.json are rejected
#
# Debian has no PGXN meta validator (PGXN::Meta::Validator is on CPAN only,
# pgxn_meta is a Rust crate), so this implements the spec's rules: the
# required keys (name, abstract, version, maintainer, license, provides,
# meta-spec) and the types and values of every key the spec defines;
# unknown keys are errors unless they start with "x_" or "X_".  Then the
# tree: the name is the extension of otp_link.control, the files exist, the
# version matches default_version.  Last line: "meta: N passed, M failed".
# Python standard library only.

import copy
import json
import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
    "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
    "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
    "postgresql", "qpl_1_0", "ssleay", "sun", "zlib", "open_source",
    "restricted", "unrestricted", "unknown",
}
PHASES = {"configure", "build", "runtime", "test", "develop"}
RELATIONS = {"requires", "recommends", "suggests", "conflicts"}
STATUSES = {"stable", "testing", "unstable"}
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                    r"(?:-?[0-9A-Za-z][0-9A-Za-z.-]*)?(?:\+[0-9A-Za-z.-]+)?$")
RANGE_PART = re.compile(r"^(?:(?:==|!=|>=|<=|>|<)\s*)?(\S+)$")
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


def is_custom(k):
    return k.startswith(("x_", "X_"))


class Checker:
    def __init__(self):
        self.errors = []

    def err(self, where, msg):
        self.errors.append(f"{where}: {msg}")

    def string(self, v, where, nonempty=True):
        if not isinstance(v, str):
            self.err(where, "must be a string")
            return False
        if nonempty and not v.strip():
            self.err(where, "must not be empty")
            return False
        return True

    def term(self, v, where):
        # a name: at least two characters, no whitespace, control
        # characters, "/", "\" or ":"
        if self.string(v, where) and (len(v) < 2 or re.search(r"[\s\x00-\x1f/\\:]", v)):
            self.err(where, f"{v!r} is not a valid term")

    def version(self, v, where):
        if self.string(v, where) and not SEMVER.match(v):
            self.err(where, f"{v!r} is not a semantic version")

    def version_range(self, v, where):
        if isinstance(v, int) and v == 0:
            return
        if not self.string(v, where):
            return
        if v == "0":
            return
        for part in v.split(","):
            m = RANGE_PART.match(part.strip())
            if not m or not SEMVER.match(m.group(1)):
                self.err(where, f"{v!r} is not a version or version range")
                return

    def path(self, v, where):
        if self.string(v, where) and (v.startswith("/") or "\\" in v or ".." in v.split("/")):
            self.err(where, f"{v!r} must be a relative path with \"/\" separators")

    def uri(self, v, where):
        if self.string(v, where) and not URI.match(v):
            self.err(where, f"{v!r} is not a URI")

    def keys(self, obj, where, allowed, required=()):
        if not isinstance(obj, dict):
            self.err(where, "must be an object")
            return False
        for k in required:
            if k not in obj:
                self.err(where, f"required key {k!r} is missing")
        for k in obj:
            if k not in allowed and not is_custom(k):
                self.err(where, f"unknown key {k!r}")
        return True

    def meta(self, m):
        top = {"name", "abstract", "version", "maintainer", "license",
               "provides", "meta-spec", "description", "generated_by", "tags",
               "no_index", "prereqs", "release_status", "resources"}
        if not self.keys(m, "META", top, ["name", "abstract", "version", "maintainer",
                                          "license", "provides", "meta-spec"]):
            return
        if "name" in m:
            self.term(m["name"], "name")
        if "abstract" in m:
            self.string(m["abstract"], "abstract")
        if "description" in m:
            self.string(m["description"], "description")
        if "generated_by" in m:
            self.string(m["generated_by"], "generated_by")
        if "version" in m:
            self.version(m["version"], "version")
        if "maintainer" in m:
            mt = m["maintainer"]
            if isinstance(mt, list):
                if not mt:
                    self.err("maintainer", "must not be an empty list")
                for i, x in enumerate(mt):
                    self.string(x, f"maintainer[{i}]")
            else:
                self.string(mt, "maintainer")
        if "license" in m:
            self.license(m["license"])
        if "provides" in m:
            self.provides(m["provides"])
        if "meta-spec" in m:
            ms = m["meta-spec"]
            if self.keys(ms, "meta-spec", {"version", "url"}, ["version"]):
                if ms.get("version") != "1.0.0":
                    self.err("meta-spec.version", "must be \"1.0.0\"")
                if "url" in ms:
                    self.uri(ms["url"], "meta-spec.url")
        if "tags" in m:
            t = m["tags"]
            if not isinstance(t, list) or not t:
                self.err("tags", "must be a non-empty list")
            else:
                for i, x in enumerate(t):
                    if self.string(x, f"tags[{i}]") and (len(x) > 255 or re.search(r"[\x00-\x1f]", x)):
                        self.err(f"tags[{i}]", "at most 255 characters, no control characters")
        if "no_index" in m:
            ni = m["no_index"]
            if self.keys(ni, "no_index", {"file", "directory"}):
                for k in ("file", "directory"):
                    v = ni.get(k)
                    for i, x in enumerate(v if isinstance(v, list) else ([] if v is None else [v])):
                        self.string(x, f"no_index.{k}[{i}]")
        if "prereqs" in m:
            self.prereqs(m["prereqs"])
        if "release_status" in m and m["release_status"] not in STATUSES:
            self.err("release_status", f"must be one of {sorted(STATUSES)}")
        if "resources" in m:
            self.resources(m["resources"])

    def license(self, lic):
        if isinstance(lic, str):
            if lic not in LICENSES:
                self.err("license", f"{lic!r} is not a license the spec names")
        elif isinstance(lic, list):
            if not lic:
                self.err("license", "must not be an empty list")
            for x in lic:
                if x not in LICENSES:
                    self.err("license", f"{x!r} is not a license the spec names")
        elif isinstance(lic, dict):
            if not lic:
                self.err("license", "must not be an empty object")
            for k, v in lic.items():
                self.uri(v, f"license.{k}")
        else:
            self.err("license", "must be a string, a list or an object")

    def provides(self, p):
        if not isinstance(p, dict) or not p:
            self.err("provides", "must be a non-empty object")
            return
        for name, e in p.items():
            w = f"provides.{name}"
            self.term(name, w)
            if self.keys(e, w, {"file", "version", "abstract", "docfile"}, ["file", "version"]):
                if "file" in e:
                    self.path(e["file"], w + ".file")
                if "docfile" in e:
                    self.path(e["docfile"], w + ".docfile")
                if "version" in e:
                    self.version(e["version"], w + ".version")
                if "abstract" in e:
                    self.string(e["abstract"], w + ".abstract")

    def prereqs(self, p):
        if not self.keys(p, "prereqs", PHASES):
            return
        for phase, rels in p.items():
            if is_custom(phase):
                continue
            if not self.keys(rels, f"prereqs.{phase}", RELATIONS):
                continue
            for rel, reqs in rels.items():
                if is_custom(rel):
                    continue
                w = f"prereqs.{phase}.{rel}"
                if not isinstance(reqs, dict):
                    self.err(w, "must be an object")
                    continue
                for name, ver in reqs.items():
                    self.term(name, f"{w}.{name}")
                    self.version_range(ver, f"{w}.{name}")

    def resources(self, r):
        if not self.keys(r, "resources", {"homepage", "bugtracker", "repository"}):
            return
        if "homepage" in r:
            self.uri(r["homepage"], "resources.homepage")
        if "bugtracker" in r and self.keys(r["bugtracker"], "resources.bugtracker", {"web", "mailto"}):
            if "web" in r["bugtracker"]:
                self.uri(r["bugtracker"]["web"], "resources.bugtracker.web")
            if "mailto" in r["bugtracker"]:
                self.string(r["bugtracker"]["mailto"], "resources.bugtracker.mailto")
        if "repository" in r and self.keys(r["repository"], "resources.repository", {"url", "web", "type"}):
            for k in ("url", "web"):
                if k in r["repository"]:
                    self.uri(r["repository"][k], f"resources.repository.{k}")
            if "type" in r["repository"] and self.string(r["repository"]["type"], "resources.repository.type"):
                if r["repository"]["type"] != r["repository"]["type"].lower():
                    self.err("resources.repository.type", "must be lower case")

    def tree(self, m):
        # this distribution: the META.json agrees with the files
        control = open(os.path.join(TOP, "otp_link.control")).read()
        dv = re.search(r"^default_version\s*=\s*'([^']+)'", control, re.M).group(1)
        if m.get("name") != "otp_link":
            self.err("tree", "name must be otp_link, the extension's name")
        if not (m.get("version", "") + ".").startswith(dv + "."):
            self.err("tree", f"version {m.get('version')!r} does not match default_version {dv!r}")
        for name, e in (m.get("provides") or {}).items():
            if not os.path.exists(os.path.join(TOP, "%s.control" % name)):
                self.err("tree", f"provides {name!r}: no {name}.control")
            for k in ("file", "docfile"):
                if k in e and not os.path.isfile(os.path.join(TOP, e[k])):
                    self.err("tree", f"provides.{name}.{k}: {e[k]!r} does not exist")
        if m.get("license") == "postgresql":
            text = open(os.path.join(TOP, "LICENSE")).read()
            if "PostgreSQL License" not in text:
                self.err("tree", "license postgresql but LICENSE is not the PostgreSQL License")


def check(m, tree=True):
    c = Checker()
    c.meta(m)
    if tree and isinstance(m, dict):
        c.tree(m)
    return c.errors


def main():
    args = [a for a in sys.argv[1:] if a != "--self-test"]
    path = args[0] if args else os.path.join(TOP, "META.json")
    passed = failed = 0
    try:
        meta = json.load(open(path))
    except (OSError, ValueError) as e:
        print(f"not ok - {path}: {e}")
        print("meta: 0 passed, 1 failed")
        return 1
    errors = check(meta)
    for e in errors:
        print(f"  {e}")
    if errors:
        print(f"not ok - {path} follows the PGXN Meta Spec v1.0.0")
        failed += 1
    else:
        print(f"ok - {path} follows the PGXN Meta Spec v1.0.0")
        passed += 1
    if "--self-test" in sys.argv:
        def without(k):
            m = copy.deepcopy(meta)
            del m[k]
            return m

        def with_(path_, value):
            m = copy.deepcopy(meta)
            d = m
            for k in path_[:-1]:
                d = d[k]
            d[path_[-1]] = value
            return m
        broken = [(f"without {k}", without(k)) for k in
                  ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec")]
        broken += [
            ("version 1.1", with_(["version"], "1.1")),
            ("license GPL", with_(["license"], "GPL")),
            ("meta-spec 2.0.0", with_(["meta-spec", "version"], "2.0.0")),
            ("provides without file", with_(["provides", "otp_link"], {"version": "1.1.0"})),
            ("an unknown key", with_(["homepage"], "https://example.org")),
            ("release_status final", with_(["release_status"], "final")),
            ("a bad prereq version", with_(["prereqs", "runtime", "requires", "PostgreSQL"], "fifteen")),
            ("a missing docfile", with_(["provides", "otp_link", "docfile"], "doc/none.md")),
            ("name with a space", with_(["name"], "otp link")),
        ]
        for what, m in broken:
            if check(m):
                print(f"ok - rejected: {what}")
                passed += 1
            else:
                print(f"not ok - accepted: {what}")
                failed += 1
    print(f"meta: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
