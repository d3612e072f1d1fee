//! Device control on cgroup v2: a `BPF_PROG_TYPE_CGROUP_DEVICE` program generated from a
//! device allow-list and attached to a cgroup2 directory (`BPF_PROG_ATTACH`, attach type
//! `BPF_CGROUP_DEVICE`, `BPF_F_ALLOW_MULTI`). cgroup v2 has no `devices` controller: the
//! kernel runs the device programs of a task's cgroup2 cgroup and of every ancestor on each
//! open and mknod of a device node (also on a hybrid host, before the v1 controller) and
//! refuses the access unless all of them return 1.
//!
//! The rules are the v1 `devices.allow` lines (`c 1:3 rwm`, `c *:* m`, `b 8:* r`, `a`), so
//! one allow-list serves both hierarchies; what no rule allows is denied.
//!
//! The program is written here instruction by instruction and loaded with the `bpf(2)`
//! system call itself. A BPF library such as aya is too heavy for this: it loads ELF object
//! files compiled ahead of time by a BPF toolchain (with BTF, maps and relocations), while
//! this program is a few dozen instructions whose shape depends only on the allow-list
//! known at run time, and needs no map, helper or BTF.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// `BPF_DEVCG_ACC_MKNOD`: the access asked for is mknod.
pub const MKNOD: u32 = 1;
/// `BPF_DEVCG_ACC_READ`: an open for reading.
pub const READ: u32 = 2;
/// `BPF_DEVCG_ACC_WRITE`: an open for writing.
pub const WRITE: u32 = 4;
const ALL_ACCESS: u32 = MKNOD | READ | WRITE;

/// `BPF_DEVCG_DEV_BLOCK`.
const DEV_BLOCK: i32 = 1;
/// `BPF_DEVCG_DEV_CHAR`.
const DEV_CHAR: i32 = 2;

/// What kind of device node a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `a`: both.
    All,
    /// `c`: character devices.
    Char,
    /// `b`: block devices.
    Block,
}

/// One allow rule: devices of `kind` with these numbers (`None`: any, `*`) may be used for
/// `access` (`MKNOD | READ | WRITE` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Node kind.
    pub kind: Kind,
    /// Major number; `None` for any.
    pub major: Option<u32>,
    /// Minor number; `None` for any.
    pub minor: Option<u32>,
    /// The accesses allowed, a non-empty set of [`MKNOD`], [`READ`], [`WRITE`].
    pub access: u32,
}

impl Rule {
    /// Whether the rule allows every access to every device.
    fn allows_everything(&self) -> bool {
        self.kind == Kind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ALL_ACCESS
    }
}

/// Errors of device control on cgroup v2.
#[derive(Debug)]
pub enum Error {
    /// A rule that is not `TYPE MAJOR:MINOR ACCESS`.
    Rule {
        /// The rule as written.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The kernel refused the program.
    Load {
        /// Why.
        error: std::io::Error,
        /// The verifier's log (empty if it wrote none).
        log: String,
    },
    /// The cgroup directory could not be opened.
    Cgroup {
        /// The directory.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The kernel refused to attach the program to the cgroup.
    Attach {
        /// The cgroup directory.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Rule { rule, reason } => write!(f, "device rule '{rule}': {reason}"),
            Error::Load { error, log } if log.trim().is_empty() => {
                write!(f, "cannot load the BPF device program: {error}")
            }
            Error::Load { error, log } => write!(
                f,
                "cannot load the BPF device program: {error}; verifier log:\n{}",
                log.trim_end()
            ),
            Error::Cgroup { dir, error } => {
                write!(f, "cannot open cgroup {}: {error}", dir.display())
            }
            Error::Attach { dir, error } => {
                write!(
                    f,
                    "cannot attach the BPF device program to cgroup {}: {error}",
                    dir.display()
                )?;
                if error.raw_os_error() == Some(libc::EPERM) {
                    write!(
                        f,
                        " (this needs root, and no cgroup above it may hold a device program \
                         attached without BPF_F_ALLOW_MULTI)"
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Rule { .. } => None,
            Error::Load { error, .. }
            | Error::Cgroup { error, .. }
            | Error::Attach { error, .. } => Some(error),
        }
    }
}

/// A device number of a rule: `*` or a decimal number the program can compare with a
/// 32-bit immediate.
fn number(s: &str) -> Result<Option<u32>, String> {
    if s == "*" {
        return Ok(None);
    }
    let n: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is neither a device number nor '*'"))?;
    match u32::try_from(n) {
        Ok(n) if n <= i32::MAX as u32 => Ok(Some(n)),
        _ => Err(format!("device number {n} is too large")),
    }
}

impl FromStr for Rule {
    type Err = Error;

    /// Parses a v1 `devices.allow` line: `c 1:3 rwm`, `b *:* m`, `c 136:* rw`, `a *:* rwm`
    /// or just `a` (everything).
    fn from_str(s: &str) -> Result<Rule, Error> {
        let bad = |reason: String| Error::Rule {
            rule: s.to_string(),
            reason,
        };
        let fields: Vec<&str> = s.split_whitespace().collect();
        let kind = match fields.first().copied() {
            Some("a") => Kind::All,
            Some("c") => Kind::Char,
            Some("b") => Kind::Block,
            _ => return Err(bad("the type must be a, b or c".into())),
        };
        if fields.len() == 1 && kind == Kind::All {
            return Ok(Rule {
                kind,
                major: None,
                minor: None,
                access: ALL_ACCESS,
            });
        }
        let [_, numbers, access] = fields[..] else {
            return Err(bad("expected TYPE MAJOR:MINOR ACCESS".into()));
        };
        let (major, minor) = numbers
            .split_once(':')
            .ok_or_else(|| bad("expected MAJOR:MINOR".into()))?;
        let major = number(major).map_err(bad)?;
        let minor = number(minor).map_err(bad)?;
        let mut bits = 0;
        for c in access.chars() {
            bits |= match c {
                'r' => READ,
                'w' => WRITE,
                'm' => MKNOD,
                _ => return Err(bad("the access must be a non-empty subset of rwm".into())),
            };
        }
        if bits == 0 {
            return Err(bad("the access must be a non-empty subset of rwm".into()));
        }
        Ok(Rule {
            kind,
            major,
            minor,
            access: bits,
        })
    }
}

/// One BPF instruction (`struct bpf_insn`; `regs` is `dst_reg` in the low nibble and
/// `src_reg` in the high one, the bit-field order of little-endian machines).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination and source registers.
    pub regs: u8,
    /// Jump or memory offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

// Opcodes (linux/bpf_common.h, linux/bpf.h): class | operation | source.
const BPF_LDX: u8 = 0x01;
const BPF_ALU: u8 = 0x04; // 32-bit: the result's upper half is zeroed
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_AND: u8 = 0x50;
const BPF_RSH: u8 = 0x70;
const BPF_MOV: u8 = 0xb0;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;

/// r0: the verdict; r1: the context on entry, then scratch.
const R0: u8 = 0;
const R1: u8 = 1;
/// The device type (`BPF_DEVCG_DEV_*`).
const R_TYPE: u8 = 2;
/// The access asked for (`BPF_DEVCG_ACC_*` bits).
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// `dst = *(u32 *)(src + off)`.
const fn load32(dst: u8, src: u8, off: i16) -> Insn {
    insn(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
}

/// `if dst != imm goto +off` (`off` set when the rule's block is complete).
const fn jne_imm(dst: u8, imm: i32) -> Insn {
    insn(BPF_JMP | BPF_JNE | BPF_K, dst, 0, 0, imm)
}

/// `return verdict`.
const fn ret(verdict: i32) -> [Insn; 2] {
    [
        insn(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, verdict),
        insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    ]
}

/// The program allowing exactly what `rules` allow. It loads the context
/// (`struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`) into registers,
/// then tests each rule in turn — a rule is a block of conditional jumps to the next block
/// followed by `return 1` — and ends with `return 0`. A rule that allows everything ends the
/// program (the verifier refuses unreachable instructions).
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        // access_type = (access << 16) | type
        load32(R_TYPE, R1, 0),
        insn(BPF_ALU | BPF_AND | BPF_K, R_TYPE, 0, 0, 0xffff),
        load32(R_ACCESS, R1, 0),
        insn(BPF_ALU | BPF_RSH | BPF_K, R_ACCESS, 0, 0, 16),
        load32(R_MAJOR, R1, 4),
        load32(R_MINOR, R1, 8),
    ];
    for rule in rules {
        if rule.allows_everything() {
            p.extend(ret(1));
            return p;
        }
        let mut block = Vec::with_capacity(8);
        match rule.kind {
            Kind::All => {}
            Kind::Char => block.push(jne_imm(R_TYPE, DEV_CHAR)),
            Kind::Block => block.push(jne_imm(R_TYPE, DEV_BLOCK)),
        }
        if rule.access & ALL_ACCESS != ALL_ACCESS {
            // The access asked for must be within the rule's: (asked & allowed) == asked.
            block.push(insn(BPF_ALU | BPF_MOV | BPF_X, R1, R_ACCESS, 0, 0));
            block.push(insn(
                BPF_ALU | BPF_AND | BPF_K,
                R1,
                0,
                0,
                rule.access as i32,
            ));
            block.push(insn(BPF_JMP | BPF_JNE | BPF_X, R1, R_ACCESS, 0, 0));
        }
        if let Some(major) = rule.major {
            block.push(jne_imm(R_MAJOR, major as i32));
        }
        if let Some(minor) = rule.minor {
            block.push(jne_imm(R_MINOR, minor as i32));
        }
        block.extend(ret(1));
        // Every jump so far skips the rest of the block.
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code & 0x07 == BPF_JMP && ins.code != BPF_JMP | BPF_EXIT {
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.extend(ret(0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// The head of `union bpf_attr` as `BPF_PROG_LOAD` reads it (the kernel takes the size
/// given and treats the fields after it as zero).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The head of `union bpf_attr` as `BPF_PROG_ATTACH` reads it.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

// No padding: every byte the kernel reads is initialised.
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 64);
const _: () = assert!(std::mem::size_of::<ProgAttachAttr>() == 16);

/// `bpf(cmd, attr, size)`.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised `#[repr(C)]` prefix of `union bpf_attr`
    // for `cmd`, passed with its exact size; the kernel only reads it and the buffers its
    // fields point to, which the callers keep alive across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads `insns` as a cgroup device program; on failure, loads it again with a log buffer
/// and returns the verifier's log in the error.
pub fn load(insns: &[Insn]) -> Result<OwnedFd, Error> {
    const LICENSE: &std::ffi::CStr = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"orbit_dev");
    let attr = |log: &mut [u8]| ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
    };
    // Before Linux 5.11 a program's memory counts against RLIMIT_MEMLOCK (64 KiB for root
    // on many hosts, shared with systemd's own programs): lifted for the load, then put back
    // so the apps this process starts inherit the limit they had.
    let _memlock = MemlockLifted::new();
    let error = match bpf(BPF_PROG_LOAD, &attr(&mut [])) {
        // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
        Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => e,
    };
    let mut log = vec![0u8; 256 * 1024];
    match bpf(BPF_PROG_LOAD, &attr(&mut log)) {
        // Loaded this time (a transient failure): keep it.
        // SAFETY: as above, a new descriptor nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(_) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(Error::Load {
                error,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

/// RLIMIT_MEMLOCK raised to infinity while it lives (best effort), the old limit restored on
/// drop.
struct MemlockLifted(Option<libc::rlimit>);

impl MemlockLifted {
    fn new() -> MemlockLifted {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into `old`, which lives for the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut old) } != 0
            || old.rlim_cur == libc::RLIM_INFINITY
        {
            return MemlockLifted(None);
        }
        let inf = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit reads one rlimit from `inf`, which lives for the call.
        let lifted = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) } == 0;
        MemlockLifted(lifted.then_some(old))
    }
}

impl Drop for MemlockLifted {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            // SAFETY: setrlimit reads one rlimit from `old`, which lives for the call.
            unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &old) };
        }
    }
}

/// Attaches program `prog` to cgroup2 directory `dir` as a device program, next to those
/// already there (`BPF_F_ALLOW_MULTI`: each must allow an access).
fn attach_prog(dir: &Path, prog: &OwnedFd) -> Result<(), Error> {
    let cgroup = std::fs::File::open(dir).map_err(|error| Error::Cgroup {
        dir: dir.to_path_buf(),
        error,
    })?;
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &attr)
        .map(|_| ())
        .map_err(|error| Error::Attach {
            dir: dir.to_path_buf(),
            error,
        })
}

/// Restricts the processes of cgroup2 directory `dir` (and of the cgroups below it) to the
/// devices `rules` allow. The program stays attached after its descriptor is closed, until
/// the cgroup is removed. Calling this again adds a second program; an access is then
/// allowed only if both allow it, so the same rules twice change nothing.
pub fn attach(dir: &Path, rules: &[Rule]) -> Result<(), Error> {
    let prog = load(&program(rules))?;
    attach_prog(dir, &prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rules_parse_like_devices_allow_lines() {
        assert_eq!(
            rule("c 1:3 rwm"),
            Rule {
                kind: Kind::Char,
                major: Some(1),
                minor: Some(3),
                access: READ | WRITE | MKNOD
            }
        );
        assert_eq!(
            rule("b *:* m"),
            Rule {
                kind: Kind::Block,
                major: None,
                minor: None,
                access: MKNOD
            }
        );
        assert_eq!(
            rule("c 136:* rw"),
            Rule {
                kind: Kind::Char,
                major: Some(136),
                minor: None,
                access: READ | WRITE
            }
        );
        assert_eq!(rule("c 2147483647:1 r").major, Some(i32::MAX as u32));
        assert_eq!(rule("c 10:229 r").access, READ);
        assert_eq!(rule("c 10:229 w").access, WRITE);
        let all = Rule {
            kind: Kind::All,
            major: None,
            minor: None,
            access: READ | WRITE | MKNOD,
        };
        assert_eq!(rule("a"), all);
        assert_eq!(rule("a *:* rwm"), all);
        assert_eq!(rule("  c  1:3   mrw "), rule("c 1:3 rwm"));
        for bad in [
            "",
            "x 1:3 rwm",
            "c",
            "c 1:3",
            "c 1 rwm",
            "c 1:3 rwx",
            "c 1:3 ",
            "c a:3 r",
            "c 1:-3 r",
            "c 1:3 rw extra",
            "c 4294967296:0 r",
            "c 2147483648:0 r",
            "c 1:99999999999999999999 r",
            "b",
        ] {
            let e = bad.parse::<Rule>().expect_err(bad);
            assert!(
                e.to_string().starts_with(&format!("device rule '{bad}'")),
                "{e}"
            );
        }
    }

    const RET1: [Insn; 2] = ret(1);
    const RET0: [Insn; 2] = ret(0);

    #[test]
    fn empty_list_denies_everything() {
        let p = program(&[]);
        assert_eq!(p.len(), 8);
        assert_eq!(p[6..], RET0);
    }

    #[test]
    fn a_rule_is_a_block_of_jumps_to_the_next_rule() {
        let p = program(&[rule("c 1:3 rw"), rule("b *:* m")]);
        // Prologue 6; `c 1:3 rw`: type, 3 for the access, major, minor, return 1 (2);
        // `b *:* m`: type, 3 for the access, return 1; return 0.
        assert_eq!(p.len(), 6 + 8 + 6 + 2);
        let first = &p[6..14];
        assert_eq!(first[0], insn(0x55, R_TYPE, 0, 7, DEV_CHAR));
        assert_eq!(first[1], insn(0xbc, R1, R_ACCESS, 0, 0));
        assert_eq!(first[2], insn(0x54, R1, 0, 0, (READ | WRITE) as i32));
        assert_eq!(first[3], insn(0x5d, R1, R_ACCESS, 4, 0));
        assert_eq!(first[4], insn(0x55, R_MAJOR, 0, 3, 1));
        assert_eq!(first[5], insn(0x55, R_MINOR, 0, 2, 3));
        assert_eq!(first[6..], RET1);
        let second = &p[14..20];
        assert_eq!(second[0], insn(0x55, R_TYPE, 0, 5, DEV_BLOCK));
        assert_eq!(second[2], insn(0x54, R1, 0, 0, MKNOD as i32));
        assert_eq!(second[3].off, 2);
        assert_eq!(second[4..], RET1);
        assert_eq!(p[20..], RET0);
    }

    #[test]
    fn wildcards_and_full_access_need_no_test() {
        // rwm: no access test; `*`: no number test; `a`: no type test.
        let p = program(&[rule("c 136:* rwm")]);
        assert_eq!(p.len(), 6 + 2 + 2 + 2);
        assert_eq!(p[6], insn(0x55, R_TYPE, 0, 3, DEV_CHAR));
        assert_eq!(p[7], insn(0x55, R_MAJOR, 0, 2, 136));
        let p = program(&[rule("a *:5 r")]);
        assert_eq!(p.len(), 6 + 4 + 2 + 2);
        assert_eq!(p[6].regs, (R_ACCESS << 4) | R1);
        assert_eq!(p[9], insn(0x55, R_MINOR, 0, 2, 5));
    }

    #[test]
    fn a_rule_allowing_everything_ends_the_program() {
        let p = program(&[rule("c 1:3 r"), rule("a"), rule("c 1:5 r")]);
        assert_eq!(p.len(), 6 + 8 + 2, "nothing after `a`, not even return 0");
        assert_eq!(p[p.len() - 2..], RET1);
        assert_eq!(program(&[rule("a *:* mwr")]).len(), 8);
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        let rules: Vec<Rule> = [
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 136:* rwm",
            "b 8:0 r",
            "a 1:* w",
        ]
        .iter()
        .map(|s| rule(s))
        .collect();
        let p = program(&rules);
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == BPF_JMP && ins.code != 0x95 {
                let to = i as i64 + 1 + i64::from(ins.off);
                assert!(to > i as i64 && (to as usize) < p.len(), "{i}: {ins:?}");
                // Each jump lands right after a `return 1`: on the next rule's first test.
                assert_eq!(p[to as usize - 1], RET1[1], "{i}");
            }
        }
    }

    // ------------------------------------------------ the kernel (as root, cgroup2 mounted)

    /// A cgroup of its own below this process's cgroup2 cgroup; removed on drop.
    struct TestCgroup(PathBuf);

    /// The cgroup2 mount point (/sys/fs/cgroup/unified on a hybrid host).
    fn cgroup2_mount() -> PathBuf {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mi.lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                (post.split(' ').next() == Some("cgroup2")).then(|| pre.split(' ').nth(4))?
            })
            .map(PathBuf::from)
            .expect("these tests need a cgroup2 mount (none in /proc/self/mountinfo)")
    }

    impl TestCgroup {
        fn new(name: &str) -> TestCgroup {
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
            let own = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .expect("no cgroup2 line in /proc/self/cgroup");
            let dir = cgroup2_mount()
                .join(own.trim_start_matches('/'))
                .join(format!("orbit-devbpf-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir(&dir);
            std::fs::create_dir(&dir)
                .unwrap_or_else(|e| panic!("cannot create {} (run as root): {e}", dir.display()));
            TestCgroup(dir)
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            // The probe's child has been reaped, but the cgroup may be busy for a moment.
            for _ in 0..100 {
                match std::fs::remove_dir(&self.0) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                    _ => return,
                }
            }
        }
    }

    /// A directory for device nodes, on a mount without `nodev`; removed on drop. Holds
    /// made-here copies of null (1:3), zero (1:5), full (1:7) and urandom (1:9).
    struct NodeDir(PathBuf);

    impl NodeDir {
        fn new(name: &str) -> NodeDir {
            use nix::sys::statvfs::{statvfs, FsFlags};
            let candidates = [
                std::env::temp_dir(),
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
            ];
            let base = candidates
                .iter()
                .find(|d| statvfs(*d).is_ok_and(|s| !s.flags().contains(FsFlags::ST_NODEV)))
                .expect("no directory on a mount without nodev for device nodes");
            let dir = base.join(format!("orbit-devbpf-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let d = NodeDir(dir);
            for (n, minor) in [("null", 3), ("zero", 5), ("full", 7), ("urandom", 9)] {
                d.mknod(n, libc::S_IFCHR, 1, minor);
            }
            d
        }

        fn path(&self, name: &str) -> std::ffi::CString {
            let p = self.0.join(name);
            std::ffi::CString::new(p.into_os_string().into_encoded_bytes()).unwrap()
        }

        fn mknod(&self, name: &str, kind: libc::mode_t, major: u32, minor: u32) {
            // SAFETY: mknod(2) reads the NUL-terminated path.
            let r = unsafe {
                libc::mknod(
                    self.path(name).as_ptr(),
                    kind | 0o666,
                    libc::makedev(major, minor),
                )
            };
            assert_eq!(r, 0, "mknod {name}: {}", std::io::Error::last_os_error());
        }
    }

    impl Drop for NodeDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// One attempt of a probe process; its errno (0 for success).
    enum Probe {
        Open(std::ffi::CString, libc::c_int),
        Mknod(std::ffi::CString, libc::mode_t, libc::dev_t),
    }

    fn open(d: &NodeDir, name: &str, flags: libc::c_int) -> Probe {
        Probe::Open(d.path(name), flags)
    }

    fn mknod(d: &NodeDir, name: &str, kind: libc::mode_t, major: u32, minor: u32) -> Probe {
        Probe::Mknod(d.path(name), kind | 0o666, libc::makedev(major, minor))
    }

    const MAX_PROBES: usize = 16;

    /// Runs `probes` in a child process that first moves into cgroup `cgroup` (stays in
    /// this process's cgroup with `None`); returns each probe's errno, 0 for success.
    fn probe(cgroup: Option<&TestCgroup>, probes: &[Probe]) -> Vec<i32> {
        assert!(probes.len() <= MAX_PROBES);
        let procs = cgroup.map(|c| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(c.0.join("cgroup.procs"))
                .unwrap()
        });
        let procs_fd = procs.as_ref().map_or(-1, |f| f.as_raw_fd());
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes async-signal-safe calls (write, open, close, mknod,
        // _exit) on memory prepared before the fork, and never returns.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => unsafe {
                // SAFETY (all of the child): raw system calls on live, NUL-terminated paths
                // and on a stack buffer of the size written.
                if procs_fd >= 0 && libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(2);
                }
                let mut out = [0i32; MAX_PROBES];
                for (i, p) in probes.iter().enumerate() {
                    let ok = match p {
                        Probe::Open(path, flags) => {
                            let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC);
                            fd >= 0 && libc::close(fd) == 0
                        }
                        Probe::Mknod(path, mode, dev) => {
                            libc::mknod(path.as_ptr(), *mode, *dev) == 0
                        }
                    };
                    out[i] = if ok { 0 } else { *libc::__errno_location() };
                }
                let size = std::mem::size_of_val(&out);
                let code = i32::from(
                    libc::write(w.as_raw_fd(), out.as_ptr().cast(), size) as usize != size,
                );
                libc::_exit(code);
            },
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut buf).unwrap();
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "the probe process failed (exit 2: it could not join the cgroup)"
                );
                buf.chunks_exact(4)
                    .take(probes.len())
                    .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
                    .collect()
            }
        }
    }

    fn rules(list: &[&str]) -> Vec<Rule> {
        list.iter().map(|s| rule(s)).collect()
    }

    const EPERM: i32 = libc::EPERM;
    const RDONLY: libc::c_int = libc::O_RDONLY;
    const WRONLY: libc::c_int = libc::O_WRONLY;
    const RDWR: libc::c_int = libc::O_RDWR;

    #[test]
    fn program_allows_exactly_its_list() {
        let cg = TestCgroup::new("list");
        let d = NodeDir::new("list");
        attach(&cg.0, &rules(&["c 1:3 rw", "c 1:5 r"])).unwrap();
        let probes = [
            open(&d, "null", RDWR),
            open(&d, "zero", RDONLY),
            open(&d, "zero", WRONLY),
            open(&d, "full", RDONLY),
            open(&d, "full", RDWR),
            mknod(&d, "null2", libc::S_IFCHR, 1, 3),
        ];
        assert_eq!(
            probe(Some(&cg), &probes),
            [0, 0, EPERM, EPERM, EPERM, EPERM]
        );
        assert!(!d.0.join("null2").exists());
        // The same probes outside the cgroup: nothing refused.
        assert_eq!(probe(None, &probes), [0; 6]);
    }

    #[test]
    fn mknod_alone_makes_a_node_that_does_not_open() {
        let cg = TestCgroup::new("mknod");
        let d = NodeDir::new("mknod");
        attach(&cg.0, &rules(&["b *:* m", "c 1:3 rwm"])).unwrap();
        let got = probe(
            Some(&cg),
            &[
                mknod(&d, "blk", libc::S_IFBLK, 7, 250),
                open(&d, "blk", RDONLY),
                mknod(&d, "null2", libc::S_IFCHR, 1, 3),
                open(&d, "null2", RDWR),
                mknod(&d, "zero2", libc::S_IFCHR, 1, 5),
                open(&d, "zero", RDONLY),
            ],
        );
        assert_eq!(got, [0, EPERM, 0, 0, EPERM, EPERM]);
        // Outside, the block node opens as far as its driver (no such loop device): the
        // EPERM above came from the program.
        let outside = probe(None, &[open(&d, "blk", RDONLY)]);
        assert_ne!(outside[0], EPERM);
    }

    #[test]
    fn wildcards_match_any_number_and_type() {
        let cg = TestCgroup::new("wild");
        let d = NodeDir::new("wild");
        attach(&cg.0, &rules(&["c 1:* r", "a *:9 w"])).unwrap();
        let got = probe(
            Some(&cg),
            &[
                open(&d, "full", RDONLY),
                open(&d, "null", RDONLY),
                open(&d, "full", WRONLY),
                open(&d, "urandom", WRONLY),
                // Read by one rule and write by the other is not read-write.
                open(&d, "urandom", RDWR),
                mknod(&d, "null2", libc::S_IFCHR, 1, 3),
            ],
        );
        assert_eq!(got, [0, 0, EPERM, 0, EPERM, EPERM]);
    }

    #[test]
    fn default_deny_and_allow_all() {
        let deny = TestCgroup::new("deny");
        let all = TestCgroup::new("all");
        let d = NodeDir::new("deny");
        attach(&deny.0, &[]).unwrap();
        attach(&all.0, &rules(&["c 1:3 r", "a"])).unwrap();
        let probes = [
            open(&d, "null", RDONLY),
            open(&d, "full", RDWR),
            mknod(&d, "blk", libc::S_IFBLK, 7, 250),
        ];
        assert_eq!(probe(Some(&deny), &probes), [EPERM, EPERM, EPERM]);
        assert_eq!(probe(Some(&all), &probes), [0, 0, 0]);
    }

    #[test]
    fn attaching_twice_changes_nothing() {
        let cg = TestCgroup::new("twice");
        let d = NodeDir::new("twice");
        let list = rules(&["c 1:3 rw"]);
        attach(&cg.0, &list).unwrap();
        attach(&cg.0, &list).unwrap();
        let got = probe(
            Some(&cg),
            &[open(&d, "null", RDWR), open(&d, "full", RDONLY)],
        );
        assert_eq!(got, [0, EPERM]);
    }

    #[test]
    fn a_cgroup_below_inherits_the_program() {
        let cg = TestCgroup::new("parent");
        let d = NodeDir::new("parent");
        attach(&cg.0, &rules(&["c 1:3 rw", "c 1:7 rw"])).unwrap();
        let child = TestCgroup(cg.0.join("child"));
        std::fs::create_dir(&child.0).unwrap();
        // The child's own program cannot widen what the parent's allows.
        attach(&child.0, &rules(&["c 1:3 rw", "c 1:5 rw"])).unwrap();
        let got = probe(
            Some(&child),
            &[
                open(&d, "null", RDWR),
                open(&d, "full", RDWR),
                open(&d, "zero", RDWR),
            ],
        );
        assert_eq!(got, [0, EPERM, EPERM]);
    }

    #[test]
    fn a_refused_program_comes_with_the_verifier_log() {
        // `exit` without setting r0.
        let e = load(&[insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)]).unwrap_err();
        let Error::Load { error, log } = &e else {
            panic!("{e}");
        };
        assert_eq!(error.raw_os_error(), Some(libc::EACCES), "{e}");
        assert!(log.contains("R0"), "{e}");
        assert!(e.to_string().contains("verifier log"), "{e}");
    }

    #[test]
    fn attach_to_a_missing_cgroup_says_which() {
        let e = attach(Path::new("/nonexistent/orbit"), &[]).unwrap_err();
        assert!(matches!(e, Error::Cgroup { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/orbit"), "{e}");
    }

    #[test]
    fn the_pods_allow_list_as_a_program() {
        use orbit_stage1::{App, Device};
        let cg = TestCgroup::new("pod");
        let all = TestCgroup::new("pod-all");
        let d = NodeDir::new("pod");
        let mut app = App::default();
        app.devices.push(Device {
            path: "/dev/kmsg".into(),
            host_path: "/dev/kmsg".into(),
            kind: 'c',
            major: 1,
            minor: 11,
            file_mode: 0o644,
            permissions: "r".into(),
        });
        crate::devices::restrict_cgroup2(&cg.0, [&app]).unwrap();
        let mut privileged = App::default();
        privileged.isolators.all_devices = true;
        crate::devices::restrict_cgroup2(&all.0, [&app, &privileged]).unwrap();
        d.mknod("kmsg", libc::S_IFCHR, 1, 11);
        let probes = [
            open(&d, "null", RDWR),
            open(&d, "full", RDWR),
            // The app's device, for reading only.
            open(&d, "kmsg", RDONLY),
            open(&d, "kmsg", WRONLY),
            // Any node may be made (`c *:* m`, `b *:* m`), only the allowed ones opened.
            mknod(&d, "mem", libc::S_IFCHR, 1, 1),
            open(&d, "mem", RDONLY),
            mknod(&d, "blk", libc::S_IFBLK, 7, 250),
            open(&d, "blk", RDONLY),
        ];
        let got = probe(Some(&cg), &probes);
        assert_eq!(got, [0, 0, 0, EPERM, 0, EPERM, 0, EPERM]);
        // With a privileged app among them, no program: kmsg opens for writing, and mem and
        // the block node as far as their drivers (this kernel may have no /dev/mem).
        std::fs::remove_file(d.0.join("mem")).unwrap();
        std::fs::remove_file(d.0.join("blk")).unwrap();
        let got = probe(Some(&all), &probes);
        assert_eq!(got[..5], [0, 0, 0, 0, 0]);
        assert_eq!(got[6], 0);
        assert_ne!(got[5], EPERM);
        assert_ne!(got[7], EPERM);
    }
}
