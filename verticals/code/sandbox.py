"""Run untrusted Python programs (model-written code plus its tests) in a contained child process.

Layers, strongest first; each is used when the OS allows it and the ones in force are reported in
`SandboxResult.layers`:
  * `netns`  a new network namespace: no interface but a downed loopback, so nothing is reachable;
  * `mountns` a new mount namespace: private size-limited tmpfs on /tmp, /var/tmp, /dev/shm and on the
    working directory; folders the dropped user cannot enter (e.g. /root holding the interpreter) are
    replaced by a tmpfs that shows only the interpreter's folders, read-only;
  * `readonly` every other mount of that namespace made read-only: only the private tmpfs are writable;
  * `uid`    when started as root: the child runs as a per-slot unprivileged uid (RLIMIT_NPROC then
    counts only that sandbox's processes; root ignores the limit), no supplementary groups;
  * `userns` when not root: a user namespace makes the namespaces above possible; the program is then the
    SDK's own user, so `noproc` covers /proc (the SDK's environment, API keys included, is there);
  * `seccomp` a kernel filter: no new process (threads allowed), no exec, no socket, no io_uring, no
    ptrace, no namespaces, no signal to another process (kill, sigqueue, fcntl F_SETOWN); it holds whatever
    the Python code does;
  * `rlimits` CPU seconds, address space, processes, file size, open files, no core dumps
    (always, with wall-clock time enforced by the parent);
  * `audit`  a Python audit hook (PEP 578) installed before the program runs: it blocks sockets,
    processes (fork, exec, subprocess, os.system, posix_spawn), signals, ctypes, sub-interpreters,
    writes outside the working directory, and the introspection that could reach the hook.
The child is a session leader; afterwards its whole process group and any process left with the
sandbox uid (or session) is killed, and the working directory is removed.

Linux only for the namespace, uid and seccomp layers (seccomp on x86_64 and aarch64); elsewhere rlimits
and the audit hook remain. Without root and without user namespaces (Ubuntu 24.04's AppArmor default,
Docker's default seccomp profile) the program can read and write what the user can: a warning says so,
and the SDK process makes itself non-dumpable so that its environment is not readable in /proc.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, Optional

Status = Literal["pass", "fail", "timeout", "error"]

OUTPUT_TAIL_BYTES = 8192
BASE_UID = 60000  # per-slot sandbox uids BASE_UID..BASE_UID+UID_RANGE-1 (unused range on Debian/Ubuntu)
UID_RANGE = 1024
MAX_PROCESSES = 32  # RLIMIT_NPROC of a dropped uid (threads count too)
MAX_FILE_MB = 16  # RLIMIT_FSIZE: one file, stdout and stderr included
MAX_OPEN_FILES = 64
DISK_MB = 64  # size of each private tmpfs (working directory, /tmp)
PROGRAM_NAME = "program.py"
PROGRESS_MIN_PROGRAMS = 20
SANDBOX_MARKER = "distill-sandbox-"  # prefix of working directories; appears in the child's command line

_SYNTAX_ERRORS = ("SyntaxError", "IndentationError", "TabError")


@dataclass
class SandboxResult:
    status: Status
    reason: str
    seconds: float
    stdout: str = ""  # last OUTPUT_TAIL_BYTES of the program's output
    stderr: str = ""
    layers: tuple[str, ...] = field(default=())  # isolation layers that were in force

    @property
    def passed(self) -> bool:
        return self.status == "pass"


# --- code run inside the child ---------------------------------------------------------------------
# Stage 1 runs as the caller (root or not): namespaces, mounts, rlimits, dropping the uid. It uses ctypes
# (mount/unshare have no os function before 3.12), so it then exec()s a fresh interpreter: no ctypes
# object survives into stage 2, which installs the audit hook and runs the program.

_STAGE1 = r'''
import json, os, resource, stat, sys
cfg = json.loads(sys.argv[1])
report_fd = cfg["report_fd"]
wd = cfg["workdir"]
layers = []

def report(**kw):
    try:
        os.write(report_fd, (json.dumps(kw) + "\n").encode())
    except OSError:
        pass

try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
except Exception:
    libc = None

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWIPC = 0x00020000, 0x10000000, 0x40000000, 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18

def unshare(flags):
    if libc is None or libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno() if libc else 0, "unshare failed")

def mount(src, target, fstype, flags, data):
    enc = lambda s: None if s is None else os.fsencode(s)
    if libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount %s on %s: %s" % (src, target, os.strerror(err)))

def under(path, top):
    return path == top or path.startswith(top.rstrip("/") + "/")

def open_to_others(path):
    """Every folder on the way is enterable, and the last one listable, by an unrelated user."""
    parts = path.rstrip("/").split("/")
    for i in range(1, len(parts) + 1):
        st = os.stat("/".join(parts[:i]) or "/")
        if not st.st_mode & stat.S_IXOTH:
            return "/".join(parts[:i]) or "/"
    return None if os.stat(path).st_mode & stat.S_IROTH else path

def cover(top, keep, opts):
    """Mount a tmpfs over `top`, keeping the folders in `keep` (below top) visible, read-only."""
    fd = os.open(top, os.O_PATH | os.O_DIRECTORY)
    try:
        mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, opts)
        for path in keep:
            rel = os.path.relpath(path, top)
            os.makedirs(path, 0o755, exist_ok=True)
            mount("/proc/self/fd/%d/%s" % (fd, rel), path, None, MS_BIND | MS_REC, None)
            mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
    finally:
        os.close(fd)

def outermost(paths):
    out = []
    for p in sorted(set(paths)):
        if not any(under(p, q) for q in out):
            out.append(p)
    return out

MS_NOEXEC, MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 8, 1024, 2048, 1 << 21, 1 << 24
KEPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
              "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}

KERNEL_FS = {"proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "pstore", "bpf",
             "binfmt_misc", "configfs", "fusectl", "mqueue", "devpts", "hugetlbfs", "efivarfs", "autofs", "nsfs"}

def unescape(field):
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    out, i = "", 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out += chr(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out += field[i]
            i += 1
    return out

def read_only_everywhere():
    """Every mount of this namespace made read-only (a bind remount that keeps the flags an unprivileged
    namespace may not change), so the program can write only where a tmpfs is mounted afterwards: with
    no uid change (not root) the user's own files would otherwise be writable. Returns the mount points
    that refused."""
    refused = []
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    for row in rows:
        target, options = unescape(row[4]), row[5].split(",")
        fstype = row[row.index("-") + 1] if "-" in row else ""
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        for name in options:
            flags |= KEPT_FLAGS.get(name, 0)
        try:
            mount(None, target, None, flags, None)
        except OSError:
            # a mount hidden under another one is not reachable anyway, and kernel file systems (proc,
            # sysfs, cgroup, ...) take no writes from an unprivileged program
            if os.path.exists(target) and fstype not in KERNEL_FS:
                refused.append(target)
    return refused

def private_mounts(needed, uid, gid, program):
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    refused = read_only_everywhere()
    if refused:
        report(warning="could not make read-only: %s" % ", ".join(refused[:5]))
    else:
        layers.append("readonly")
    shared = [d for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock") if os.path.isdir(d) and not os.path.islink(d)]
    for top in shared:
        if not any(under(top, n) for n in needed):
            cover(top, outermost(n for n in needed if under(n, top) and n != top),
                  "size=%dm,mode=1777" % cfg["disk_mb"])
    if uid is not None:
        # folders the dropped uid cannot enter (e.g. /root holding a pyenv interpreter)
        for _ in range(8):
            blocked = [b for b in (open_to_others(n) for n in needed) if b]
            if not blocked:
                break
            top = sorted(blocked, key=len)[0]
            if top == "/" or top in needed:
                break  # cannot cover: the uid check below reports it
            cover(top, outermost(n for n in needed if under(n, top)), "size=1m,mode=755")
    os.makedirs(wd, exist_ok=True)
    owner = "" if uid is None else ",uid=%d,gid=%d" % (uid, gid)
    mount("tmpfs", wd, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=700%s" % (cfg["disk_mb"], owner))
    with open(os.path.join(wd, cfg["program_name"]), "w") as f:
        f.write(program)
    os.chmod(os.path.join(wd, cfg["program_name"]), 0o644)
    if uid is None:
        # same user as the SDK (no uid to drop to): /proc would show the SDK's environment, API keys included
        mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=555")
        layers.append("noproc")

def main():
    os.umask(0o022)
    with open(os.path.join(wd, cfg["program_name"])) as f:
        program = f.read()
    uid, gid = cfg["uid"], cfg["gid"]
    root = os.geteuid() == 0
    exe = os.path.realpath(sys.executable)
    needed = outermost([p for p in sys.path + [sys.prefix, sys.base_prefix, sys.exec_prefix,
                        sys.base_exec_prefix, os.path.dirname(sys.executable), os.path.dirname(exe)]
                        if p and os.path.isdir(p)])
    if root:
        # a private IPC namespace: SysV shared memory and queues outlive the program in the host's
        flags = [CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC, CLONE_NEWNET | CLONE_NEWNS, CLONE_NEWNET]
    else:
        uid = gid = None
        flags = [CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC, CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS]
    for f in flags:
        try:
            unshare(f)
        except OSError:
            continue
        if f & CLONE_NEWUSER:
            me, mygid = os.getuid(), os.getgid()
            with open("/proc/self/setgroups", "w") as fh: fh.write("deny")
            with open("/proc/self/uid_map", "w") as fh: fh.write("%d %d 1" % (me, me))
            with open("/proc/self/gid_map", "w") as fh: fh.write("%d %d 1" % (mygid, mygid))
            layers.append("userns")
        layers.append("netns")
        if f & CLONE_NEWIPC:
            layers.append("ipcns")
        if f & CLONE_NEWNS:
            try:
                private_mounts(needed, uid, gid, program)
                layers.append("mountns")
            except OSError as err:
                report(warning="private mounts failed: %s" % err)
        break
    if uid is not None and "mountns" not in layers:
        os.chown(wd, uid, gid)
    if uid is not None:
        closed = [b for b in (open_to_others(n) for n in needed) if b]
        if closed:
            report(warning="uid not dropped: %s is closed to other users" % closed[0])
            uid = None
    limits = [(resource.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"] + 1)),
              (resource.RLIMIT_AS, (cfg["memory_mb"] << 20,) * 2),
              (resource.RLIMIT_FSIZE, (cfg["file_mb"] << 20,) * 2),
              (resource.RLIMIT_NOFILE, (cfg["open_files"],) * 2),
              (resource.RLIMIT_CORE, (0, 0))]
    if uid is not None:
        limits.append((resource.RLIMIT_NPROC, (cfg["max_processes"],) * 2))
    for which, value in limits:
        resource.setrlimit(which, value)
    layers.append("rlimits")
    if uid is not None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        layers.append("uid")
    if libc is not None:
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: nothing exec'd can gain privileges
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG=SIGKILL (after the uid change, which clears it)
        if os.getppid() != cfg["parent_pid"]:
            raise RuntimeError("the parent exited during set-up")
    os.chdir(wd)
    if cfg["guard"]:
        layers.append("audit")
    if "mountns" not in layers and "uid" not in layers:
        report(warning="no namespaces and no uid to drop to (unprivileged user namespaces are refused here): "
               "programs can read and write what this user can, except the SDK's own process; run as root "
               "or allow user namespaces (e.g. sysctl kernel.apparmor_restrict_unprivileged_userns=0)")
    report(layers=layers)
    os.execv(sys.executable, [sys.executable, "-I", "-S", "-B", "-c", cfg["stage2"], sys.argv[1]])

try:
    main()
except BaseException as err:
    report(setup_error="%s: %s" % (type(err).__name__, err))
    os._exit(3)
'''

_STAGE2 = r'''
def _boot():
    import json, os, sys
    cfg = json.loads(sys.argv[1])
    wd = cfg["workdir"]
    path = os.path.join(wd, cfg["program_name"])
    with open(path) as f:
        source = f.read()
    if _seccomp():
        os.write(cfg["report_fd"], (json.dumps({"layers": ["seccomp"]}) + "\n").encode())
    if cfg["guard"]:
        import _posixsubprocess
        def _no_fork_exec(*args, _audit=sys.audit, **kwargs):
            _audit("os.posix_spawn", "_posixsubprocess.fork_exec")  # the hook reports and refuses
        _posixsubprocess.fork_exec = _no_fork_exec  # the only process-spawning call without an audit event
        _install_hook(wd, cfg["report_fd"])
    sys.argv = [path]
    return source, path


def _seccomp():
    """A seccomp filter, enforced by the kernel, irreversible and inherited: no new process (threads stay
    allowed), no exec, no socket of any family, no io_uring (it opens sockets without the socket call), no
    namespaces, no ptrace, no signal, limit, priority or CPU set for another process, no memory outside the
    address-space limit (memfd, SysV IPC). The audit hook refuses the same in Python, where
    a program can find a way around it (a fresh copy of a C module); here there is none. Built by hand:
    libseccomp's Python binding is not on PyPI, and the filter is some seventy BPF instructions."""
    import os, sys
    try:
        import ctypes
    except ImportError:  # a Python built without ctypes: the other layers remain
        return False
    machine = os.uname().machine
    if machine == "x86_64":
        arch = 0xC000003E
        nr = dict(socket=41, socketpair=53, clone=56, fork=57, vfork=58, execve=59, kill=62, fcntl=72, ptrace=101,
                  rt_sigqueueinfo=129, tkill=200, tgkill=234, unshare=272, setns=308, rt_tgsigqueueinfo=297,
                  process_vm_writev=311, execveat=322, prlimit64=302, setpriority=141, sched_setparam=142,
                  sched_setscheduler=144, sched_setaffinity=203, ioprio_set=251, sched_setattr=314,
                  memfd_create=319, shmget=29, semget=64, msgget=68)
    elif machine == "aarch64":
        arch = 0xC00000B7
        nr = dict(socket=198, socketpair=199, clone=220, execve=221, kill=129, fcntl=25, ptrace=117, tkill=130,
                  tgkill=131, rt_sigqueueinfo=138, rt_tgsigqueueinfo=240, unshare=97, setns=268,
                  process_vm_writev=271, execveat=281, prlimit64=261, setpriority=140, sched_setparam=118,
                  sched_setscheduler=119, sched_setaffinity=122, ioprio_set=30, sched_setattr=274,
                  memfd_create=279, shmget=194, semget=190, msgget=186)
    else:
        return False
    nr.update(pidfd_send_signal=424, io_uring_setup=425, io_uring_enter=426, io_uring_register=427, clone3=435)
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    ALLOW, KILL, ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
    EPERM, EAGAIN, EACCES, ENOSYS = 1, 11, 13, 38
    NR, ARCH, ARG0, ARG1 = 0, 4, 16, 24  # offsets in struct seccomp_data (args[i]: low 32 bits, little-endian)
    F_SETOWN, F_SETSIG, F_SETOWN_EX = 8, 10, 15  # fcntl commands that point a file's signals at a process
    CLONE_THREAD = 0x00010000
    pid = os.getpid()
    prog = [(LD, 0, 0, ARCH), (JEQ, 1, 0, arch), (RET, 0, 0, KILL), (LD, 0, 0, NR)]
    if machine == "x86_64":
        prog += [(JGE, 0, 1, 0x40000000), (RET, 0, 0, ERRNO | ENOSYS)]  # the x32 ABI's numbers
    # clone: a thread (CLONE_THREAD) is allowed, a process is not
    prog += [(JEQ, 0, 4, nr["clone"]), (LD, 0, 0, ARG0), (JSET, 0, 1, CLONE_THREAD), (RET, 0, 0, ALLOW),
             (RET, 0, 0, ERRNO | EAGAIN)]
    # signals: only to this process (its first argument is the target pid or thread group)
    for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        prog += [(JEQ, 0, 4, nr[name]), (LD, 0, 0, ARG0), (JEQ, 0, 1, pid), (RET, 0, 0, ALLOW),
                 (RET, 0, 0, ERRNO | EPERM)]
    # prlimit64: this process's own limits only (pid 0 or its own; glibc's getrlimit/setrlimit pass 0). Run as
    # the SDK's user (no root), a program could otherwise set the SDK's CPU limit to 1 s and kill it
    prog += [(JEQ, 0, 5, nr["prlimit64"]), (LD, 0, 0, ARG0), (JEQ, 2, 0, 0), (JEQ, 1, 0, pid),
             (RET, 0, 0, ERRNO | EPERM), (RET, 0, 0, ALLOW)]
    # fcntl: any command but those that would send a file's signals (SIGIO, or any set by F_SETSIG) elsewhere
    prog += [(JEQ, 0, 6, nr["fcntl"]), (LD, 0, 0, ARG1), (JEQ, 3, 0, F_SETOWN), (JEQ, 2, 0, F_SETSIG),
             (JEQ, 1, 0, F_SETOWN_EX), (RET, 0, 0, ALLOW), (RET, 0, 0, ERRNO | EPERM)]
    refused = {"socket": EACCES, "socketpair": EACCES, "fork": EAGAIN, "vfork": EAGAIN, "execve": EACCES,
               "execveat": EACCES, "clone3": ENOSYS,  # glibc then falls back to clone, checked above
               "io_uring_setup": ENOSYS, "io_uring_enter": ENOSYS, "io_uring_register": ENOSYS,
               "ptrace": EPERM, "unshare": EPERM, "setns": EPERM, "process_vm_writev": EPERM,
               "pidfd_send_signal": EPERM,
               # another process's priority, CPUs or scheduling (PRIO_USER reaches all of a user's processes)
               "setpriority": EPERM, "ioprio_set": EPERM, "sched_setparam": EPERM, "sched_setscheduler": EPERM,
               "sched_setaffinity": EPERM, "sched_setattr": EPERM,
               # memory the address-space limit does not count, and SysV objects that outlive the program
               "memfd_create": EPERM, "shmget": EPERM, "semget": EPERM, "msgget": EPERM}
    for name, err in refused.items():
        if name in nr:
            prog += [(JEQ, 0, 1, nr[name]), (RET, 0, 0, ERRNO | err)]
    prog.append((RET, 0, 0, ALLOW))

    class Instruction(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Instruction))]

    code = (Instruction * len(prog))(*[Instruction(*i) for i in prog])
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
    ok = libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER),
                    ctypes.byref(Program(len(prog), code)), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    del code, libc, Instruction, Program
    for name in [m for m in sys.modules if m in ("ctypes", "_ctypes") or m.startswith("ctypes.")]:
        del sys.modules[name]  # the program imports ctypes afresh, which the audit hook refuses
    return ok


def _install_hook(wd, report_fd):
    import os, sys
    # The hook and its helpers read only their own default arguments (a tuple the program cannot change:
    # assigning __defaults__/__code__ is itself blocked), never module globals or builtins by name, so
    # monkeypatching os, posixpath or builtins does not change what it checks.
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def _text(path, _str=str, _bytes=bytes, _isinstance=isinstance):
        """path as an exact str (a str subclass cannot then fake slicing or split), None if not a path."""
        if _isinstance(path, _bytes):
            return _bytes.decode(path, "utf-8", "surrogateescape")
        if _isinstance(path, _str):
            return _str.__str__(path)
        return None

    def _inside(path, _text=_text, _wd=wd, _str=str, _len=len):
        """Whether path lies in the working directory, resolved as text: the program can create no
        symlink or hard link and cannot chdir, so text resolution matches the file system."""
        path = _text(path)
        if path is None:
            return False
        if path[:1] != "/":
            path = _wd + "/" + path
        parts = []
        for part in _str.split(path, "/"):
            if part == "" or part == ".":
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
        norm = "/" + "/".join(parts)
        return norm == _wd or norm[:_len(_wd) + 1] == _wd + "/"

    def _hook(event, args,
              _inside=_inside, _text=_text, _fd=report_fd, _write=os.write, _str=str, _bytes=bytes,
              _int=int, _type=type, _isinstance=isinstance, _len=len, _repr=repr,
              _PermissionError=PermissionError, _OSError=OSError, _write_flags=write_flags,
              _blocked=frozenset((
                  "os.system", "os.fork", "os.forkpty", "os.exec", "os.spawn", "os.posix_spawn",
                  "os.kill", "os.killpg", "signal.pthread_kill", "os.chdir", "os.symlink", "os.link",
                  "subprocess.Popen", "pty.spawn", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
                  "cpython.PyInterpreterState_New", "sys.remote_exec", "webbrowser.open")),
              _blocked_prefixes=("socket.", "ctypes.", "_ctypes"),
              _blocked_modules=frozenset((
                  "ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "_xxinterpchannels",
                  "_interpreters", "_interpchannels", "_interpqueues", "_testcapi", "_testinternalcapi",
                  "_testmultiphase", "_testsinglephase", "_ctypes_test")),
              _guarded_attrs=frozenset(("__code__", "__defaults__", "__kwdefaults__")),
              # event -> (positions of path arguments, positions of dir_fd arguments)
              _path_events=(("sqlite3.connect", (0,), ()),
                            ("os.remove", (0,), (1,)), ("os.rmdir", (0,), (1,)), ("os.mkdir", (0,), (2,)),
                            ("os.rename", (0, 1), (2, 3)), ("os.chmod", (0,), (2,)), ("os.chown", (0,), (3,)),
                            ("os.truncate", (0,), ()), ("os.utime", (0,), (3,)), ("os.setxattr", (0,), ()),
                            ("os.removexattr", (0,), ()), ("os.chflags", (0,), ()), ("os.lchflags", (0,), ()))):
        event = _str.__str__(event)
        detail = None
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if _type(flags) is _int and flags & _write_flags and _type(path) is not _int:
                text = _text(path)
                # os.open (mode None) may carry a dir_fd that the event does not show: absolute paths only
                if not _inside(path) or (mode is None and (text is None or text[:1] != "/")):
                    detail = "open for writing outside the working directory"
        elif event in _blocked or _str.startswith(event, _blocked_prefixes):
            detail = "not allowed"
        elif event == "fcntl.fcntl" and _len(args) > 1 and args[1] in (8, 10, 15):  # F_SETOWN, F_SETSIG, F_SETOWN_EX
            detail = "signal owner change not allowed"
        elif event == "import":
            name = _text(args[0])
            if name is not None and (name in _blocked_modules or _str.startswith(name, "ctypes.")):
                detail = "module not allowed"
        elif event == "object.__setattr__":
            name = _text(args[1])
            if name is not None and name in _guarded_attrs:
                detail = "attribute change not allowed"
        else:
            for name, paths, dir_fds in _path_events:
                if event == name:
                    for i in paths:
                        # sqlite3's event carries a pathlib.Path as given: its __fspath__ is the program's code
                        if _text(args[i]) is None:
                            detail = "path not given as text (str(path) passes)"
                        elif not _inside(args[i]):
                            detail = "path outside the working directory"
                    for i in dir_fds:
                        if i < _len(args) and not (args[i] is None or (_type(args[i]) is _int and args[i] == -1)):
                            detail = "dir_fd not allowed"
                    break
        if detail is None:
            return
        target = args[0] if _len(args) and _type(args[0]) is _int else (_text(args[0]) if _len(args) else None)
        message = event + ("" if target is None else " %r" % (target,)) + ": " + detail
        try:
            _write(_fd, _str.encode("blocked: " + message[:500] + "\n", "utf-8", "replace"))
        except _OSError:
            pass
        raise _PermissionError("sandbox blocked " + message)

    sys.addaudithook(_hook)


try:
    _source, __file__ = _boot()
except BaseException as err:  # the sandbox's own set-up, not the program: reported as an error
    import json as _json, os as _os, sys as _sys
    try:
        _os.write(_json.loads(_sys.argv[1])["report_fd"],
                  (_json.dumps({"setup_error": "%s: %s" % (type(err).__name__, err)}) + "\n").encode())
    finally:
        _os._exit(3)
del _boot, _install_hook, _seccomp
exec(compile(_source, __file__, "exec"))
'''


# --- parent side -----------------------------------------------------------------------------------

class _UidLease:
    """An unprivileged uid held for one run. A lock file per uid (flock) keeps concurrent runs, also from
    other processes, on different uids, so 'kill every process of this uid' never hits another run."""

    def __init__(self, slot: int):
        self.uid: Optional[int] = None
        self._fd: Optional[int] = None
        self._slot = slot

    def __enter__(self) -> "_UidLease":
        if os.geteuid() != 0:
            return self
        lock_dir = Path(tempfile.gettempdir()) / "distill-uid-locks"
        lock_dir.mkdir(mode=0o700, exist_ok=True)
        for i in range(UID_RANGE):
            uid = BASE_UID + (self._slot + i) % UID_RANGE
            fd = os.open(lock_dir / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if _uid_in_use(uid):  # zombies of an earlier run not yet reaped
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return self
        raise RuntimeError(f"no free sandbox uid in {BASE_UID}..{BASE_UID + UID_RANGE - 1}")

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock


def _proc_table() -> list[tuple[int, int, int, int, bool]]:
    """(pid, real uid, process group, session, is_dead) of every process, read from /proc: psutil is not
    a dependency, and these four fields are all the clean-up needs."""
    rows = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        uid_line = next(line for line in status.splitlines() if line.startswith(b"Uid:"))
        rows.append((int(entry.name), int(uid_line.split()[1]), int(fields[2]), int(fields[3]),
                     fields[0] in (b"Z", b"X")))
    return rows


def _kill_stragglers(session: int, uid: Optional[int]) -> int:
    """SIGKILL every live process left in the sandbox's session or owned by its uid; returns how many.
    Killed processes are reaped by init (here lazily, ~2 s), so `_UidLease` skips uids that still
    have zombies: those count against RLIMIT_NPROC."""
    if not os.path.isdir("/proc"):
        return 0
    killed = 0
    for _ in range(100):  # a process may fork between the scan and the kill: scan again until none is left
        alive = [pid for pid, puid, pgid, sid, dead in _proc_table()
                 if not dead and pid != os.getpid()
                 and (sid == session or pgid == session or (uid is not None and puid == uid))]
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.005)
    return killed


def _uid_in_use(uid: int) -> bool:
    """Any process (zombies included) owned by uid; /proc/<pid> belongs to the process's uid."""
    if not os.path.isdir("/proc"):
        return False
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                return True
        except OSError:
            continue
    return False


def _wait_without_reaping(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait until the child exits, leaving it a zombie so its pid (= process group id) cannot be reused
    before the group is killed. Returns False on timeout."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): a reaping wait is the fallback
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([pidfd], [], [], max(timeout, 0.0))
        return bool(ready)
    finally:
        os.close(pidfd)


def _tail(f: IO[bytes]) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - OUTPUT_TAIL_BYTES))
    return f.read().decode("utf-8", "replace")


def _read_report(f: IO[bytes]) -> dict:
    f.seek(0)
    report: dict = {"layers": [], "blocked": [], "warning": [], "setup_error": []}
    for line in f.read(1 << 20).decode("utf-8", "replace").splitlines():
        if line.startswith("blocked: "):  # written by the audit hook
            report["blocked"].append(line[len("blocked: "):])
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            for key, value in item.items():
                if key in report:
                    report[key].extend(value if isinstance(value, list) else [value])
    return report


def _last_line(text: str, limit: int = 500) -> str:
    """The last non-blank line, cut to `limit` characters (a program may print one line of megabytes)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= limit else last[:limit] + "..."


def _classify(returncode: Optional[int], timed_out: bool, stderr: str, report: dict, timeout_s: float,
              memory_mb: int) -> tuple[Status, str]:
    if timed_out:
        return "timeout", f"wall-clock limit of {timeout_s:g}s exceeded"
    if report["setup_error"]:
        return "error", f"sandbox setup failed: {report['setup_error'][0]}"
    if report["blocked"]:
        return "error", f"blocked operation: {report['blocked'][0]}"
    if returncode == 0:
        return "pass", ""
    if returncode is not None and returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        if sig == signal.SIGXCPU:
            return "timeout", f"CPU time limit exceeded ({name})"
        if sig == signal.SIGXFSZ:
            return "error", f"file size limit of {MAX_FILE_MB} MB exceeded ({name})"
        if sig == signal.SIGKILL:
            return "error", f"killed by {name} (CPU hard limit or out of memory)"
        return "error", f"killed by {name}"
    last = _last_line(stderr)
    if last.startswith(_SYNTAX_ERRORS):
        return "error", last
    if last.startswith("MemoryError"):
        return "error", f"{last} (address-space limit {memory_mb} MB)"
    if "[Errno 27]" in last:  # EFBIG: Python ignores SIGXFSZ, so the limit shows as this error instead
        return "error", f"file size limit of {MAX_FILE_MB} MB exceeded (its output or a file): {last}"
    return "fail", last or f"exit code {returncode}"


def run_program(program: str, *, timeout_s: float = 5.0, memory_mb: int = 512, slot: int = 0,
                python_guard: bool = True) -> SandboxResult:
    """Run `program` (Python source) in a fresh sandbox; status pass (exit 0), fail (an exception, reason
    = last traceback line), timeout, or error (syntax error, memory/limit kill, blocked operation).
    `slot` picks the sandbox uid when several run at once; `python_guard=False` leaves out only the
    audit hook (to test the OS layers on their own)."""
    started = time.monotonic()
    _hide_own_environment()
    with _UidLease(slot) as lease, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryFile() as report:
        workdir = tempfile.mkdtemp(prefix=SANDBOX_MARKER)
        try:
            Path(workdir, PROGRAM_NAME).write_text(program)
            config = {"workdir": workdir, "program_name": PROGRAM_NAME, "report_fd": report.fileno(),
                      "uid": lease.uid, "gid": lease.uid, "memory_mb": int(memory_mb),
                      "cpu_s": int(timeout_s) + 1, "file_mb": MAX_FILE_MB, "open_files": MAX_OPEN_FILES,
                      "max_processes": MAX_PROCESSES, "disk_mb": DISK_MB, "guard": python_guard,
                      "parent_pid": os.getpid(),
                      "stage2": _STAGE2}
            env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", "-c", _STAGE1, json.dumps(config)],
                                    cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    pass_fds=(report.fileno(),), start_new_session=True)
            try:
                exited = _wait_without_reaping(proc, timeout_s - (time.monotonic() - started))
            finally:
                _kill_group(proc.pid)
                # before reaping: the unreaped leader keeps its pid, so no new process can take it and be killed
                _kill_stragglers(proc.pid, lease.uid)
                proc.wait()
            seconds = time.monotonic() - started
            stdout, stderr, parsed = _tail(out), _tail(err), _read_report(report)
        finally:
            _remove_tree(workdir)
    for warning in parsed["warning"]:
        _warn_once(warning)
    status, reason = _classify(proc.returncode, not exited, stderr, parsed, timeout_s, memory_mb)
    return SandboxResult(status, reason, round(seconds, 4), stdout, stderr, tuple(parsed["layers"]))


_warned: set[str] = set()
_hidden = False


def _hide_own_environment() -> None:
    """Not root: the program runs as this user, and where no user namespace hides /proc it could read this
    process's environment (API keys) there. A non-dumpable process's /proc entries are closed to other
    processes of its user (it also writes no core dump)."""
    global _hidden
    if _hidden or os.geteuid() == 0 or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
    except ImportError:  # a Python built without ctypes
        return

    PR_SET_DUMPABLE = 4
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, ctypes.c_ulong(0), ctypes.c_ulong(0),
                                            ctypes.c_ulong(0), ctypes.c_ulong(0))
    _hidden = True


def _warn_once(message: str) -> None:
    """A layer the OS refused (e.g. the uid drop): said once per process, not once per program."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(f"sandbox: {message}", RuntimeWarning, stacklevel=3)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_tree(path: str) -> None:
    import shutil

    root = os.path.realpath(path)

    def make_writable_and_retry(func, p, _exc):  # a program may leave read-only folders behind
        parent = os.path.realpath(os.path.dirname(p))
        try:
            # only inside the working directory: its own parent is the system's temporary folder (/tmp)
            if parent == root or parent.startswith(root + os.sep):
                os.chmod(parent, 0o700)
            func(p)
        except OSError as err:  # left behind, said once: a failed clean-up must not fail the run
            _warn_once(f"could not remove {p}: {err}")

    shutil.rmtree(path, onerror=make_writable_and_retry)


def run_programs(programs: list[str], *, timeout_s: float = 5.0, memory_mb: int = 512, workers: int = 2,
                 progress: Optional[bool] = None, desc: str = "sandbox") -> list[SandboxResult]:
    """run_program over many programs, `workers` at a time; results in input order. A tqdm bar is shown
    when there are more than PROGRESS_MIN_PROGRAMS programs (or when `progress` says so)."""
    from tqdm.auto import tqdm

    workers = max(1, int(workers))
    slots: list[int] = list(range(workers))
    lock = threading.Lock()

    def run_one(program: str) -> SandboxResult:
        with lock:
            slot = slots.pop()
        try:
            return run_program(program, timeout_s=timeout_s, memory_mb=memory_mb, slot=slot)
        finally:
            with lock:
                slots.append(slot)

    show = len(programs) > PROGRESS_MIN_PROGRAMS if progress is None else progress
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(programs), desc=desc, disable=not show, file=sys.stderr) as bar:
        futures = [pool.submit(run_one, p) for p in programs]
        for f in futures:
            f.add_done_callback(lambda _f: bar.update(1))
        return [f.result() for f in futures]
