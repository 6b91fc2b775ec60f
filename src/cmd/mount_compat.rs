//! `chute mount` as Mountpoint users and `/etc/fstab` call it.
//!
//! Two conventions meet here, and both are handled on the raw argument list,
//! before clap sees it, so `chute mount`'s own flags stay the one definition:
//!
//! - Mountpoint for S3 spellings: `-f` (`--foreground`), `--read-only` (a no-op:
//!   the mount is always read-only), `--cache DIR` (`--cache-dir`),
//!   `--max-cache-size MIB` (`--cache-size`, a bare number is MiB as in
//!   Mountpoint), `--debug` (debug logs), `--allow-root`, `--auto-unmount`, and
//!   a bucket name with `--prefix P` ([`CompatArgs`], folded in by [`apply`]).
//! - The `mount.fuse3` helper (what `mount -t fuse.chute` and an fstab line of
//!   type `fuse.chute` run): it calls `chute SOURCE MOUNTPOINT -o OPTS`, with no
//!   subcommand, and expects the call to return once the file system is
//!   mounted. Such a call becomes `chute mount SOURCE MOUNTPOINT --daemon`
//!   (unless `-f` asks for the foreground) and each `-o` option becomes a flag:
//!   the generic mount options that mean nothing here (`ro`, `nodev`, `_netdev`,
//!   `noauto`, ...) are dropped, `allow_other`, `uid=N`, `gid=N` and friends map
//!   to their flags, and any other `name[=value]` is `--name [value]` (with `_`
//!   read as `-`), so `-o endpoint_url=http://...,region=eu-west-1` works.
//!   `chute` installed as `mount.fuse.chute` (a symbolic link) accepts the same.

use std::ffi::{OsStr, OsString};

use clap::Args;

use crate::cmd::mount::MountArgs;
use crate::exit::UsageError;

/// Log filter `--debug` stands for.
const DEBUG_FILTER: &str =
    "info,chute=debug,chute_fastfile=debug,chute_s3=debug,chute_channel=debug";

/// Global flags that take a value (they may precede the subcommand).
const GLOBAL_WITH_VALUE: &[&str] = &["--log", "--log-format", "--metrics-addr"];

/// Generic mount(8) and FUSE options with no meaning for a read-only chute
/// mount (or whose meaning chute always applies), dropped from `-o`.
const IGNORED_OPTIONS: &[&str] = &[
    "ro",
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "_netdev",
    "nofail",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "nodiratime",
    "strictatime",
    "async",
    "sync",
    "dirsync",
    "default_permissions",
    "read_only",
];

/// Options with a value that are dropped the same way.
const IGNORED_WITH_VALUE: &[&str] = &["fsname", "subtype", "comment", "context", "max_read"];

/// Mountpoint-for-S3 flags with no `chute mount` counterpart of the same name.
#[derive(Debug, Args, Default)]
pub struct CompatArgs {
    /// With a bucket name as SOURCE: the prefix to mount (Mountpoint's `--prefix`).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Let root use the mount too (chute mounts as root: the owner is root already).
    #[arg(long)]
    pub allow_root: bool,
    /// Unmount when chute ends, even when it is killed (FUSE `auto_unmount`).
    #[arg(long)]
    pub auto_unmount: bool,
}

/// The argument list after [`rewrite_argv`], for a process that re-runs
/// itself with the same arguments (`mount --daemon`).
static ARGV: std::sync::OnceLock<Vec<OsString>> = std::sync::OnceLock::new();

/// The arguments chute parsed (rewritten), else the process's own.
pub fn args_os() -> Vec<OsString> {
    ARGV.get()
        .cloned()
        .unwrap_or_else(|| std::env::args_os().collect())
}

/// [`rewrite_argv`] of this process's arguments, remembered for [`args_os`].
pub fn process_argv(subcommands: &[&str]) -> Vec<OsString> {
    let argv = rewrite_argv(std::env::args_os().collect(), subcommands);
    let _ = ARGV.set(argv.clone());
    argv
}

/// The argument list as `chute`'s parser expects it: the `mount.fuse3` call
/// turned into a `chute mount` call, Mountpoint's spellings into chute's.
pub fn rewrite_argv(argv: Vec<OsString>, subcommands: &[&str]) -> Vec<OsString> {
    let mut argv = argv;
    if argv.is_empty() {
        return argv;
    }
    let helper_name = basename(&argv[0]).starts_with("mount.fuse.chute")
        || basename(&argv[0]).starts_with("mount.chute");
    let Some(at) = subcommand_position(&argv) else {
        return argv;
    };
    let first = argv[at].to_string_lossy().into_owned();
    let fstab = helper_name || !subcommands.contains(&first.as_str());
    if fstab {
        // `chute SOURCE MOUNTPOINT -o ...`; a mistyped subcommand is left for
        // clap to report.
        let options = argv[at..]
            .iter()
            .any(|a| a.to_string_lossy().starts_with("-o"));
        if !(helper_name || first.contains("://") || options) {
            return argv;
        }
        argv.insert(at, OsString::from("mount"));
        if helper_name {
            // Messages and the daemon's re-run say `chute`, not the link's name.
            argv[0] = std::env::current_exe()
                .map(OsString::from)
                .unwrap_or_else(|_| OsString::from("chute"));
        }
    } else if first != "mount" {
        return argv;
    }
    let (head, rest) = argv.split_at(at + 1);
    let mut out: Vec<OsString> = head.to_vec();
    let mut debug = false;
    let mut foreground = false;
    let mut tail = Vec::new();
    let mut it = rest.iter().cloned();
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy().into_owned();
        match s.as_str() {
            "--" => {
                tail.push(arg);
                tail.extend(it.by_ref());
                break;
            }
            "-f" | "--foreground" => {
                foreground = true;
                out.push("--foreground".into());
            }
            "--read-only" => {}
            "--debug" => debug = true,
            "--cache" => {
                out.push("--cache-dir".into());
                out.extend(it.next());
            }
            "--max-cache-size" => {
                out.push("--cache-size".into());
                out.extend(it.next().map(|v| mib_if_bare(&v)));
            }
            "-o" => {
                if let Some(opts) = it.next() {
                    expand_options(
                        &opts.to_string_lossy(),
                        &mut out,
                        &mut debug,
                        &mut foreground,
                    );
                }
            }
            _ if s.starts_with("--cache=") => {
                out.push("--cache-dir".into());
                out.push(s["--cache=".len()..].into());
            }
            _ if s.starts_with("--max-cache-size=") => {
                out.push("--cache-size".into());
                out.push(mib_if_bare(OsStr::new(&s["--max-cache-size=".len()..])));
            }
            _ if s.starts_with("-o") && s.len() > 2 => {
                let opts = s[2..].trim_start_matches('=').to_owned();
                expand_options(&opts, &mut out, &mut debug, &mut foreground);
            }
            _ => out.push(arg),
        }
    }
    if fstab && !foreground && !out.iter().any(|a| a == "--daemon") {
        out.push("--daemon".into());
    }
    out.extend(tail);
    let has_log = out[..at].iter().any(|a| {
        let a = a.to_string_lossy();
        a == "--log" || a.starts_with("--log=")
    });
    if debug && !has_log && std::env::var_os("CHUTE_LOG").is_none() {
        out.insert(1, "--log".into());
        out.insert(2, DEBUG_FILTER.into());
    }
    out
}

/// Folds Mountpoint's `--prefix` (with a bucket name as SOURCE) and the flags
/// chute needs no action for into `args`.
pub fn apply(mut args: MountArgs) -> anyhow::Result<MountArgs> {
    let mut compat = std::mem::take(&mut args.compat);
    // The one compat flag the mount itself acts on stays with the arguments.
    args.compat.auto_unmount = std::mem::take(&mut compat.auto_unmount);
    if let [source, _mountpoint] = args.paths.as_mut_slice() {
        *source = source_uri(source, compat.prefix.as_deref())?;
    } else if compat.prefix.is_some() {
        return Err(UsageError(
            "--prefix goes with a bucket name as SOURCE: chute mount BUCKET MOUNTPOINT --prefix P"
                .into(),
        )
        .into());
    }
    if compat.allow_root && !nix::unistd::geteuid().is_root() {
        return Err(UsageError(
            "--allow-root: chute mounts for root only when it runs as root; use --allow-other \
             to let every user (root included) read the mount"
                .into(),
        )
        .into());
    }
    Ok(args)
}

/// SOURCE as a URI: a bare bucket name is `s3://BUCKET/`, with `prefix` appended.
fn source_uri(source: &str, prefix: Option<&str>) -> anyhow::Result<String> {
    let has_scheme = source.contains("://");
    match (has_scheme, prefix) {
        (true, None) => Ok(source.to_owned()),
        (false, prefix) if !source.contains('/') && !source.is_empty() => Ok(format!(
            "s3://{source}/{}",
            prefix.unwrap_or("").trim_start_matches('/')
        )),
        (true, Some(prefix)) => match source.strip_prefix("s3://") {
            Some(bucket) if !bucket.trim_end_matches('/').contains('/') => Ok(format!(
                "s3://{}/{}",
                bucket.trim_end_matches('/'),
                prefix.trim_start_matches('/')
            )),
            _ => Err(UsageError(format!(
                "--prefix '{prefix}' with SOURCE '{source}': give the prefix once, either in \
                 the URI (s3://bucket/prefix) or as --prefix with a bucket name"
            ))
            .into()),
        },
        (false, _) => Err(UsageError(format!(
            "SOURCE '{source}' is neither a URI (s3://bucket/prefix, file:///dir) nor a bucket name"
        ))
        .into()),
    }
}

/// Where the subcommand (or, in the helper form, SOURCE) is: the first
/// argument that is not a global flag or a global flag's value.
fn subcommand_position(argv: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].to_string_lossy();
        if GLOBAL_WITH_VALUE.contains(&a.as_ref()) {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

/// One `-o` list, as flags.
fn expand_options(opts: &str, out: &mut Vec<OsString>, debug: &mut bool, foreground: &mut bool) {
    for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        if IGNORED_OPTIONS.contains(&name)
            || IGNORED_WITH_VALUE.contains(&name)
            || name.starts_with("x-")
        {
            continue;
        }
        match name {
            "debug" => *debug = true,
            "foreground" | "f" => {
                *foreground = true;
                out.push("--foreground".into());
            }
            "cache" => {
                out.push("--cache-dir".into());
                out.extend(value.map(OsString::from));
            }
            "max_cache_size" | "max-cache-size" => {
                out.push("--cache-size".into());
                out.extend(value.map(|v| mib_if_bare(OsStr::new(v))));
            }
            _ => {
                out.push(format!("--{}", name.replace('_', "-")).into());
                out.extend(value.map(OsString::from));
            }
        }
    }
}

/// Mountpoint's `--max-cache-size` is a number of MiB; chute's sizes take units.
fn mib_if_bare(v: &OsStr) -> OsString {
    let s = v.to_string_lossy();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        format!("{s}MiB").into()
    } else {
        v.to_owned()
    }
}

fn basename(arg0: &OsStr) -> String {
    std::path::Path::new(arg0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBCOMMANDS: &[&str] = &["ls", "mount", "unmount", "download", "pipe", "run", "serve"];

    fn rw(args: &[&str]) -> Vec<String> {
        rewrite_argv(args.iter().map(OsString::from).collect(), SUBCOMMANDS)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn other_commands_pass_through() {
        let args = ["chute", "download", "-f", "s3://b/p", "/d"];
        assert_eq!(rw(&args), args);
        assert_eq!(rw(&["chute", "--help"]), ["chute", "--help"]);
        assert_eq!(rw(&["chute", "ls", "s3://b"]), ["chute", "ls", "s3://b"]);
        // A mistyped subcommand stays one, for clap to name.
        assert_eq!(rw(&["chute", "lss", "x", "y"]), ["chute", "lss", "x", "y"]);
    }

    #[test]
    fn mountpoint_spellings_become_chute_flags() {
        assert_eq!(
            rw(&[
                "chute",
                "mount",
                "bucket",
                "/mnt",
                "-f",
                "--read-only",
                "--cache",
                "/c",
                "--max-cache-size",
                "1024",
                "--prefix",
                "train/"
            ]),
            [
                "chute",
                "mount",
                "bucket",
                "/mnt",
                "--foreground",
                "--cache-dir",
                "/c",
                "--cache-size",
                "1024MiB",
                "--prefix",
                "train/"
            ]
        );
        assert_eq!(
            rw(&[
                "chute",
                "mount",
                "s3://b/p",
                "/mnt",
                "--cache=/c",
                "--max-cache-size=2GiB"
            ]),
            [
                "chute",
                "mount",
                "s3://b/p",
                "/mnt",
                "--cache-dir",
                "/c",
                "--cache-size",
                "2GiB"
            ]
        );
    }

    #[test]
    fn debug_sets_the_log_filter_unless_one_is_given() {
        assert_eq!(
            rw(&["chute", "mount", "s3://b/p", "/mnt", "--debug"]),
            ["chute", "--log", DEBUG_FILTER, "mount", "s3://b/p", "/mnt"]
        );
        assert_eq!(
            rw(&["chute", "--log", "warn", "mount", "s3://b/p", "/mnt", "--debug"]),
            ["chute", "--log", "warn", "mount", "s3://b/p", "/mnt"]
        );
    }

    #[test]
    fn the_mount_helper_call_is_a_daemon_mount() {
        let expected = [
            "chute",
            "mount",
            "s3://b/p/",
            "/mnt",
            "--allow-other",
            "--uid",
            "1000",
            "--endpoint-url",
            "http://127.0.0.1:9000",
            "--cache-size",
            "512MiB",
            "--daemon",
        ];
        let opts = "rw,nodev,nosuid,_netdev,x-systemd.automount,allow_other,uid=1000,\
                    endpoint_url=http://127.0.0.1:9000,max_cache_size=512";
        assert_eq!(rw(&["chute", "s3://b/p/", "/mnt", "-o", opts]), expected);
        assert_eq!(
            rw(&["/sbin/mount.fuse.chute", "s3://b/p/", "/mnt", "-o", opts])[1..],
            expected[1..]
        );
        // -o glued to its list, and -f keeps it in the foreground.
        assert_eq!(
            rw(&["chute", "s3://b/p/", "/mnt", "-oro,allow_other", "-f"]),
            [
                "chute",
                "mount",
                "s3://b/p/",
                "/mnt",
                "--allow-other",
                "--foreground"
            ]
        );
    }

    #[test]
    fn every_form_reaches_the_same_source() {
        for (source, prefix, uri) in [
            ("bucket", Some("train/"), "s3://bucket/train/"),
            ("bucket", None, "s3://bucket/"),
            ("s3://bucket", Some("/train/"), "s3://bucket/train/"),
            ("s3://bucket/", Some("train/"), "s3://bucket/train/"),
            ("s3://bucket/train/", None, "s3://bucket/train/"),
            ("file:///data/train", None, "file:///data/train"),
        ] {
            assert_eq!(source_uri(source, prefix).expect(source), uri);
        }
        assert!(source_uri("s3://bucket/a/", Some("b/")).is_err());
        assert!(source_uri("./relative/dir", None).is_err());
    }
}
