#!/usr/bin/env python3
"""Writes a single-layer container image archive from files on this machine, without a container
engine or a registry.

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...) that also carries a
Docker-style manifest.json, so both `ctr images import` and tools that read `docker save` output
accept it. Everything is deterministic: entries are sorted, owned by root (unless --owner says
otherwise), dated at the epoch, and the layer is an uncompressed tar, so the same inputs always
give the same image ID.

    mkimage.py --name zeroflow.local/pause:dev --out pause.tar \
        --file build/pause:/pause --entrypoint '["/pause"]' --user 65535:65535

    --file SRC:DEST[:MODE]   a host file (symlinks followed) at DEST; MODE in octal, default: SRC's
    --dir DEST[:MODE]        an empty directory (default mode 755; use 1777 for /tmp)
    --symlink DEST:TARGET    a symbolic link
    --tree SRC:DEST          the directory SRC with everything under it (symlinks kept as
                             links, modes kept) at DEST
    --exclude PATTERN        leaves out of every --tree the paths (relative to the tree, e.g.
                             "test" or "*/__pycache__") matching this shell pattern
    --libs-of SRC            the dynamic loader and the shared libraries SRC needs (found with
                             ldd), each at its host path
    --entrypoint JSON, --cmd JSON   arrays, e.g. '["/bin/sh", "-c"]'
    --env NAME=VALUE, --user U[:G], --workdir DIR, --label NAME=VALUE
    --owner UID:GID          owner of every entry (default 0:0)

Only Linux/amd64 images with one layer are written; that is all the testbed needs.
"""

import argparse
import fnmatch
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Layer:
    """The files of the image, keyed by their path inside it (no leading slash)."""

    def __init__(self, uid, gid):
        self.entries = {}
        self.uid, self.gid = uid, gid

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self.entries:
                self.entries[parent] = ("dir", 0o755, None)
            elif self.entries[parent][0] != "dir":
                raise SystemExit(f"mkimage: {parent} is a file and a directory")

    def add_file(self, src, dest, mode=None):
        dest = norm(dest)
        real = os.path.realpath(src)
        if not os.path.isfile(real):
            raise SystemExit(f"mkimage: {src} is not a file")
        if mode is None:
            mode = os.stat(real).st_mode & 0o7777
        self._parents(dest)
        self.entries[dest] = ("file", mode, real)

    def add_dir(self, dest, mode=0o755):
        dest = norm(dest)
        self._parents(dest)
        self.entries[dest] = ("dir", mode, None)

    def add_tree(self, src, dest, excludes):
        """SRC's subtree at DEST: directories and files with their modes, symlinks as links."""
        if not os.path.isdir(src):
            raise SystemExit(f"mkimage: {src} is not a directory")
        self.add_dir(dest, os.stat(src).st_mode & 0o7777)

        def excluded(rel):
            return any(fnmatch.fnmatchcase(rel, pattern) for pattern in excludes)

        for dirpath, dirnames, filenames in os.walk(src):
            rel_dir = os.path.relpath(dirpath, src)
            kept = []
            for name in sorted(dirnames):
                rel = os.path.normpath(os.path.join(rel_dir, name))
                full = os.path.join(dirpath, name)
                if excluded(rel):
                    continue
                if os.path.islink(full):
                    self.add_symlink(os.path.join(dest, rel), os.readlink(full))
                else:
                    self.add_dir(os.path.join(dest, rel), os.stat(full).st_mode & 0o7777)
                    kept.append(name)
            dirnames[:] = kept
            for name in sorted(filenames):
                rel = os.path.normpath(os.path.join(rel_dir, name))
                full = os.path.join(dirpath, name)
                if excluded(rel):
                    continue
                if os.path.islink(full):
                    self.add_symlink(os.path.join(dest, rel), os.readlink(full))
                elif os.path.isfile(full):
                    self.add_file(full, os.path.join(dest, rel))

    def add_symlink(self, dest, target):
        dest = norm(dest)
        self._parents(dest)
        self.entries[dest] = ("symlink", 0o777, target)

    def tar_bytes(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                kind, mode, source = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime = 0
                info.uid, info.gid = self.uid, self.gid
                info.uname = info.gname = ""
                info.mode = mode
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = source
                    tar.addfile(info)
                else:
                    info.size = os.path.getsize(source)
                    with open(source, "rb") as f:
                        tar.addfile(info, f)
        return buf.getvalue()


def norm(path):
    path = os.path.normpath("/" + path).lstrip("/")
    if not path or path.startswith(".."):
        raise SystemExit(f"mkimage: bad path in image: {path!r}")
    return path


def shared_libraries(binary):
    """The loader and libraries `ldd` lists for BINARY; none for a static binary."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    text = out.stdout + out.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if out.returncode != 0:
        raise SystemExit(f"mkimage: ldd {binary} failed:\n{text}")
    libs = []
    for line in out.stdout.splitlines():
        m = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
        elif "=> not found" in line:
            raise SystemExit(f"mkimage: {binary} needs a library ldd cannot find: {line.strip()}")
    return libs


def split_pair(value, what):
    if ":" not in value:
        raise SystemExit(f"mkimage: {what} needs the form A:B, got {value!r}")
    return value.split(":", 1)


def json_array(value, what):
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise SystemExit(f"mkimage: {what} is not JSON: {e}")
    if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
        raise SystemExit(f"mkimage: {what} must be a JSON array of strings")
    return parsed


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="image reference, e.g. zeroflow.local/pause:dev")
    p.add_argument("--out", required=True)
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--symlink", action="append", default=[])
    p.add_argument("--tree", action="append", default=[])
    p.add_argument("--exclude", action="append", default=[])
    p.add_argument("--libs-of", action="append", default=[])
    p.add_argument("--entrypoint")
    p.add_argument("--cmd")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--user", default="")
    p.add_argument("--workdir", default="/")
    p.add_argument("--label", action="append", default=[])
    p.add_argument("--owner", default="0:0")
    a = p.parse_args()

    if ":" not in a.name.rsplit("/", 1)[-1]:
        raise SystemExit("mkimage: --name needs an explicit tag (never :latest, which kubelet always pulls)")
    uid, gid = (int(x) for x in split_pair(a.owner, "--owner"))
    layer = Layer(uid, gid)
    for spec in a.dir:
        dest, _, mode = spec.partition(":")
        layer.add_dir(dest, int(mode, 8) if mode else 0o755)
    for spec in a.file:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise SystemExit(f"mkimage: --file needs SRC:DEST[:MODE], got {spec!r}")
        layer.add_file(parts[0], parts[1], int(parts[2], 8) if len(parts) == 3 else None)
    for spec in a.tree:
        src, dest = split_pair(spec, "--tree")
        layer.add_tree(src, dest, a.exclude)
    for spec in a.symlink:
        dest, target = split_pair(spec, "--symlink")
        layer.add_symlink(dest, target)
    for binary in a.libs_of:
        for lib in shared_libraries(binary):
            layer.add_file(lib, lib)

    layer_digest, layer_data = blob(layer.tar_bytes())
    env = [DEFAULT_PATH] + a.env if not any(e.startswith("PATH=") for e in a.env) else a.env
    config = {"Env": env, "WorkingDir": a.workdir}
    if a.entrypoint is not None:
        config["Entrypoint"] = json_array(a.entrypoint, "--entrypoint")
    if a.cmd is not None:
        config["Cmd"] = json_array(a.cmd, "--cmd")
    if a.user:
        config["User"] = a.user
    if a.label:
        config["Labels"] = dict(split_pair(label.replace("=", ":", 1), "--label") for label in a.label)
    config_digest, config_data = blob(canonical({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "e2e/oci/mkimage.py"}],
    }))
    manifest_digest, manifest_data = blob(canonical({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config_data)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": len(layer_data)}],
    }))
    tag = a.name.rsplit(":", 1)[1]
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest,
            "size": len(manifest_data),
            "annotations": {"io.containerd.image.name": a.name, "org.opencontainers.image.ref.name": tag},
        }],
    }
    docker_manifest = [{
        "Config": "blobs/sha256/" + config_digest.split(":")[1],
        "RepoTags": [a.name],
        "Layers": ["blobs/sha256/" + layer_digest.split(":")[1]],
    }]

    files = {
        "oci-layout": canonical({"imageLayoutVersion": "1.0.0"}),
        "index.json": canonical(index),
        "manifest.json": canonical(docker_manifest),
    }
    for digest, data in ((layer_digest, layer_data), (config_digest, config_data), (manifest_digest, manifest_data)):
        files["blobs/sha256/" + digest.split(":")[1]] = data
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    os.replace(tmp, a.out)
    print(f"{a.name} {config_digest} ({len(layer_data)} bytes) -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
