"""A throw-away qemu guest for the real-device tests: a Debian kernel, its own v4l2loopback.

The guest boots the host's installed Debian kernel (``/boot/vmlinuz-*``, whose module tree
holds a dkms-built ``v4l2loopback.ko``) with a tiny busybox initramfs that mounts this
machine's root file system read-only over 9p and chroots into it, so the guest runs the
very python, venv, ffmpeg and v4l2-ctl installed here, against devices of its own. One
folder is shared writable: the host drops command files into it and the guest's agent (this
file, run as a script inside the guest) runs them and writes back their output, exit status
and process id. Only the standard library is used on both sides.

Where the guest cannot boot here (no qemu, no busybox, no kernel with the module)
:func:`unavailable` says why, for the tests to skip with it.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BOOT_TIMEOUT_S = 90
# What the initramfs loads (with their dependencies) to reach the host's root over virtio-9p;
# Debian builds them as modules.
NINEP_MODULES = ("virtio_pci", "9pnet_virtio", "9p")
AGENT_POLL_S = 0.05

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc && mount -t sysfs sys /sys && mount -t devtmpfs dev /dev
for module in {modules}; do insmod /modules/$module || echo "vm: insmod $module failed"; done
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /host || echo "vm: no host root"
for fs in proc sys dev; do mount --rbind /$fs /host/$fs; done
mkdir -p /oldtmp && mount --bind /host/tmp /oldtmp && mount -t tmpfs tmp /host/tmp
for kept in {kept}; do mkdir -p /host/tmp/$kept && mount --bind /oldtmp/$kept /host/tmp/$kept; done
mount -t tmpfs run /host/run && mkdir -p /host/dev/shm && mount -t tmpfs shm /host/dev/shm
mkdir -p /host{shared}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 shared /host{shared} || echo "vm: no shared folder"
echo "vm: agent starting"
exec chroot /host {python} {agent} {shared}
"""


def unavailable() -> str | None:
    """Why the guest cannot boot on this machine, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "the device tests boot a Linux guest with qemu"
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install {package})"
    if b"ld-linux" in Path(shutil.which("busybox")).read_bytes()[:4096]:
        return "busybox is linked dynamically and cannot run alone in the guest (apt-get install busybox-static)"
    if kernel() is None:
        return ("no installed kernel with a v4l2loopback module in /boot and /lib/modules "
                "(Debian: apt-get install linux-image-amd64 v4l2loopback-dkms)")
    return None


def kernel() -> tuple[Path, Path] | None:
    """(vmlinuz, its module tree) of the newest installed kernel that has v4l2loopback."""
    for image in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        modules = Path("/lib/modules") / image.name.removeprefix("vmlinuz-")
        if any(modules.rglob("v4l2loopback.ko*")) and os.access(image, os.R_OK):
            return image, modules
    return None


def extract_vmlinux(image: Path, target: Path) -> Path:
    """The uncompressed kernel (an ELF that qemu boots through its PVH entry) from a bzImage.

    Booted through PVH the kernel skips its own decompressor, slow when emulated (and under this
    machine's nested KVM never done: the guest hung after "Probing EDD", as virtme-ng's did).
    Debian compresses it with xz (gzip is read too)."""
    data = image.read_bytes()
    for magic, decompressor in ((b"\xfd7zXZ\x00", lzma.LZMADecompressor), (b"\x1f\x8b\x08\x00", None)):
        start = data.find(magic)
        if start < 0:
            continue
        if decompressor is None:
            elf = gzip.GzipFile(fileobj=io.BytesIO(data[start:])).read()
        else:
            elf = decompressor().decompress(data[start:])
        if elf[:4] == b"\x7fELF":
            target.write_bytes(elf)
            return target
    raise RuntimeError(f"{image} holds no xz or gzip compressed kernel")


def _newc(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A gzip'd cpio (newc) archive of ``{path: (mode, content)}``, as the kernel unpacks an initramfs."""
    out = io.BytesIO()
    for number, (name, (mode, data)) in enumerate([*files.items(), ("TRAILER!!!", (0, b""))], 1):
        encoded = name.encode() + b"\0"
        fields = (number, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out.write(b"070701" + b"".join(b"%08X" % value for value in fields) + encoded)
        out.write(b"\0" * (-(110 + len(encoded)) % 4) + data + b"\0" * (-len(data) % 4))
    return gzip.compress(out.getvalue(), compresslevel=1)


def _with_dependencies(modules_dir: Path, names: tuple[str, ...]) -> list[Path]:
    """The module files for ``names``, each after those it needs (from ``modules.dep``)."""
    needs = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        module, _, deps = line.partition(":")
        needs[module] = deps.split()
    by_name = {Path(module).name.split(".ko")[0]: module for module in needs}
    ordered: list[str] = []

    def add(module: str) -> None:
        for dependency in needs[module]:
            add(dependency)
        if module not in ordered:
            ordered.append(module)
    for name in names:
        add(by_name[name])
    return [modules_dir / module for module in ordered]


def build_initramfs(path: Path, modules_dir: Path, shared: Path, kept: tuple[Path, ...] = ()) -> Path:
    """A busybox initramfs whose init mounts the host's root read-only (and ``shared`` writable)
    and runs the agent in it; ``kept``: host folders the guest needs besides this checkout and venv."""
    dirs = ("bin", "dev", "proc", "sys", "modules")
    files: dict[str, tuple[int, bytes]] = {d: (0o040755, b"") for d in dirs}
    files["bin/busybox"] = (0o100755, Path(shutil.which("busybox")).read_bytes())
    modules = _with_dependencies(modules_dir, NINEP_MODULES)
    for module in modules:
        files[f"modules/{module.name}"] = (0o100644, module.read_bytes())
    # The guest's /tmp is its own; what it needs of the host's (a venv, a checkout) is bound back in.
    needed = {Path(sys.prefix).resolve(), Path(__file__).resolve().parents[1], *(p.resolve() for p in kept)}
    under_tmp = [str(path.relative_to("/tmp")) for path in needed if path.is_relative_to("/tmp")]
    files["init"] = (0o100755, INIT.format(modules=" ".join(m.name for m in modules), shared=shared,
                                           kept=" ".join(under_tmp),
                                           python=sys.executable, agent=Path(__file__).resolve()).encode())
    path.write_bytes(_newc(files))
    return path


@dataclass
class Result:
    rc: int
    output: str


class Job:
    """A command running in the guest (started by :meth:`VM.spawn`)."""

    def __init__(self, vm: VM, number: int) -> None:
        self.vm, self.number = vm, number
        self.pid = int(vm._wait_for(vm._file(number, "pid"), 20))

    @property
    def output(self) -> str:
        return self.vm._file(number=self.number, kind="out").read_text(errors="replace")

    def poll(self) -> int | None:
        rc = self.vm._file(self.number, "rc")
        return int(rc.read_text()) if rc.exists() and rc.read_text().strip() else None

    def signal(self, sig: int = signal.SIGINT) -> None:
        self.vm.run(f"kill -{int(sig)} {self.pid}", timeout=10)

    def wait(self, timeout: float) -> Result:
        rc = int(self.vm._wait_for(self.vm._file(self.number, "rc"), timeout, f"guest job {self.number}"))
        return Result(rc, self.output)

    def stop(self, timeout: float = 15) -> Result:
        """SIGINT (Ctrl-C), then SIGKILL if it has not ended within ``timeout``."""
        if self.poll() is None:
            self.signal(signal.SIGINT)
            try:
                return self.wait(timeout)
            except TimeoutError:
                self.signal(signal.SIGKILL)
        return self.wait(10)


class VM:
    """One booted guest; :meth:`run` and :meth:`spawn` run bash commands in it as root."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, memory_mb: int = 2048,
                 kept: tuple[Path, ...] = ()) -> None:
        found = kernel()
        assert found is not None, unavailable()
        self.image, self.modules = found
        self.workdir = workdir
        self.shared = workdir / "shared"
        self.shared.mkdir(parents=True, exist_ok=True)
        self.env = env or {}
        self.memory_mb = memory_mb
        self.kept = kept
        self.console = workdir / "console.log"
        self._number = 0
        self._lock = threading.Lock()
        self._qemu: subprocess.Popen | None = None

    def start(self) -> VM:
        initrd = build_initramfs(self.workdir / "initramfs.gz", self.modules, self.shared, self.kept)
        vmlinux = extract_vmlinux(self.image, self.workdir / "vmlinux")
        # Emulated (TCG), not KVM: this machine's nested KVM stops the kernel with "emulation failure"
        # on its first cmpxchg16b and xrstor; emulated, the guest boots in seconds and needs no /dev/kvm.
        command = [
            "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", str(min(2, os.cpu_count() or 1)),
            "-m", str(self.memory_mb), "-nodefaults", "-no-reboot", "-display", "none",
            "-serial", f"file:{self.console}", "-kernel", str(vmlinux), "-initrd", str(initrd),
            "-append", "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=4",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={self.shared},mount_tag=shared,security_model=none",
        ]
        self._qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT)
        try:
            self._wait_for(self.shared / "ready", BOOT_TIMEOUT_S, "the guest's agent")
        except BaseException:
            self.close()
            raise
        return self

    def _file(self, number: int, kind: str) -> Path:
        return self.shared / f"{number}.{kind}"

    def _wait_for(self, path: Path, timeout: float, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and (text := path.read_text()).strip():
                return text
            if self._qemu is not None and self._qemu.poll() is not None:
                raise RuntimeError(f"the guest died waiting for {what or path.name}: "
                                   f"{self._qemu.stdout.read().decode(errors='replace')[-2000:]}\n"
                                   f"console: {self.console_tail()}")
            time.sleep(AGENT_POLL_S)
        raise TimeoutError(f"{what or path.name} not done in {timeout:g} s; console: {self.console_tail()}")

    def console_tail(self, chars: int = 3000) -> str:
        return self.console.read_text(errors="replace")[-chars:] if self.console.exists() else ""

    def spawn(self, command: str) -> Job:
        """Start ``command`` (bash) in the guest without waiting for it."""
        with self._lock:
            self._number += 1
            number = self._number
        script = self._file(number, "sh")
        exports = "".join(f"export {key}={value!r}\n" for key, value in self.env.items())
        script.write_text(exports + command + "\n")
        script.rename(self._file(number, "cmd"))  # the agent takes only complete scripts
        return Job(self, number)

    def run(self, command: str, timeout: float = 60) -> Result:
        """Run ``command`` (bash) in the guest and wait for it (killed after ``timeout``)."""
        job = self.spawn(command)
        try:
            return job.wait(timeout)
        except TimeoutError:
            self.spawn(f"kill -9 {job.pid}")
            raise TimeoutError(f"`{command}` ran over {timeout:g} s in the guest; output: {job.output[-2000:]}") \
                from None

    def close(self) -> None:
        if self._qemu is None:
            return
        (self.shared / "poweroff").write_text("1")
        try:
            self._qemu.wait(15)
        except subprocess.TimeoutExpired:
            self._qemu.kill()
            self._qemu.wait()
        self._qemu = None


# -- the guest's side -------------------------------------------------------------------------

def _agent(shared: Path) -> None:
    """Run each ``N.cmd`` dropped into ``shared`` as its own process group, writing ``N.pid``,
    ``N.out`` (stdout and stderr) and, when it ends, ``N.rc``; ``poweroff`` ends the guest."""
    os.environ.update(PATH=f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin", HOME="/tmp",
                      PYTHONDONTWRITEBYTECODE="1", LANG="C.UTF-8")
    os.chdir("/tmp")
    (shared / "ready").write_text(os.uname().release)
    started: set[str] = set()
    while not (shared / "poweroff").exists():
        for script in sorted(shared.glob("*.cmd")):
            if script.name in started:
                continue
            started.add(script.name)
            number = script.name.split(".")[0]
            out = open(shared / f"{number}.out", "wb")
            process = subprocess.Popen(["bash", str(script)], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=False)
            (shared / f"{number}.pid").write_text(str(process.pid))
            threading.Thread(target=_reap, args=(process, out, shared / f"{number}.rc"), daemon=True).start()
        time.sleep(AGENT_POLL_S)
    os.sync()
    Path("/proc/sysrq-trigger").write_text("o")  # power off now: nothing in the guest needs saving


def _reap(process: subprocess.Popen, out, rc_file: Path) -> None:
    rc = process.wait()
    out.close()
    rc_file.write_text(str(rc))


if __name__ == "__main__":
    _agent(Path(sys.argv[1]))
