//! The read path through a real FUSE mount over a real `chute serve`
//! endpoint: random reads, concurrent readers, mmap, faults, changed objects,
//! write attempts. Every byte is compared with the source.

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use chute_s3::RetryPolicy;
use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};
use common::*;
use rand::{Rng, SeedableRng};

const BLOCK: u64 = 256 * 1024;
const PART: u64 = 8 << 20;

fn read_all(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn random_reads_match_the_source() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    let size = 40 * (1 << 20) + 12_345;
    let data = pattern(size, 7);
    env.put("big.bin", &data);
    let m = env.mount();
    let f = File::open(m.join("big.bin")).expect("open");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let size = size as u64;
    let mut buf = vec![0u8; 3 << 20];
    let mut cases: Vec<(u64, usize)> = Vec::new();
    // Straddling block and part boundaries, the first and the last byte, past EOF.
    for b in [BLOCK, 2 * BLOCK, PART, 2 * PART, 4 * PART] {
        cases.push((b - 1, 2));
        cases.push((b - 100, 200));
        cases.push((b - BLOCK / 2, BLOCK as usize));
    }
    cases.push((0, 1));
    cases.push((size - 1, 1));
    cases.push((size - 10, 100));
    cases.push((size, 10));
    cases.push((size + 4096, 10));
    while cases.len() < 2000 {
        let off = rng.gen_range(0..size);
        let len = match rng.gen_range(0..4) {
            0 => rng.gen_range(1..64),
            1 => rng.gen_range(1..(64 << 10)),
            2 => rng.gen_range(1..(1 << 20)),
            _ => rng.gen_range(1..(3 << 20)),
        };
        cases.push((off, len));
    }
    for (i, &(off, len)) in cases.iter().enumerate() {
        let n = f.read_at(&mut buf[..len], off).expect("read_at");
        let want_end = (off + len as u64).min(size);
        let want: &[u8] = if off >= size {
            &[]
        } else {
            &data[off as usize..want_end as usize]
        };
        // One pread may return less than asked; it must be a prefix.
        assert!(
            n <= want.len(),
            "case {i}: read {n} past EOF at {off}+{len}"
        );
        assert_eq!(&buf[..n], &want[..n], "case {i}: bytes at {off}+{len}");
        if off < size {
            assert!(n > 0, "case {i}: empty read at {off}");
        }
    }
    let s = m.unmount();
    assert!(s.reads > 0);
}

#[test]
fn concurrent_readers_and_mmap_match() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    let mut sums = Vec::new();
    for i in 0..8 {
        let d = pattern(3 << 20 | (i * 7919), i as u64 + 100);
        env.put(&format!("set/f{i}.bin"), &d);
        sums.push(sha256(&d));
    }
    let shared = pattern(24 << 20, 9);
    env.put("shared.bin", &shared);
    let m = env.mount();
    std::thread::scope(|s| {
        let mut hs = Vec::new();
        for (i, want) in sums.iter().enumerate() {
            let p = m.join(&format!("set/f{i}.bin"));
            hs.push(s.spawn(move || {
                assert_eq!(&sha256(&read_all(&p).expect("read")), want, "file {i}");
            }));
        }
        for t in 0..4u64 {
            let p = m.join("shared.bin");
            let shared = &shared;
            hs.push(s.spawn(move || {
                // Each thread reads the file in its own order of 1 MiB chunks.
                let f = File::open(&p).expect("open");
                let mut buf = vec![0u8; 1 << 20];
                let n = shared.len() / (1 << 20);
                for k in 0..n {
                    let c = (k * (2 * t as usize + 1) + t as usize) % n;
                    let off = c << 20;
                    f.read_exact_at(&mut buf, off as u64).expect("read");
                    assert_eq!(
                        &buf[..],
                        &shared[off..off + (1 << 20)],
                        "thread {t} chunk {c}"
                    );
                }
            }));
        }
        for h in hs {
            h.join().expect("reader");
        }
    });
    // mmap through Python, as a data loader would.
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import mmap,hashlib,sys\n\
             f=open(sys.argv[1],'rb'); m=mmap.mmap(f.fileno(),0,access=mmap.ACCESS_READ)\n\
             print(hashlib.sha256(m[:]).hexdigest(), hashlib.sha256(m[5000:3000000]).hexdigest())",
        )
        .arg(m.join("shared.bin"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8_lossy(&out.stdout);
    let want = format!("{} {}", sha256(&shared), sha256(&shared[5000..3_000_000]));
    assert_eq!(got.trim(), want);
}

#[test]
fn faults_still_give_exact_bytes() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    let a = pattern(20 << 20, 1);
    let b = pattern(5 << 20, 2);
    let small: Vec<Vec<u8>> = (0..20)
        .map(|i| pattern(100_000 + i, 50 + i as u64))
        .collect();
    env.put("a.bin", &a);
    env.put("b.bin", &b);
    for (i, d) in small.iter().enumerate() {
        env.put(&format!("small/{i:02}"), d);
    }
    let server = env.addr();
    let proxy = env.rt.block_on(FaultProxy::start(server)).expect("proxy");
    // More attempts than faults injected below (24 in all): however the faults
    // fall on concurrent GETs, none may run out of retries, so any read error
    // is a bug. (With six, a read-ahead GET that drew six of the eight 503s in
    // a row, no bytes in between to reset its count, answered the kernel EIO
    // while the reader's own read then succeeded.)
    let policy = RetryPolicy {
        max_attempts: 32,
        ..fast_policy()
    };
    let client = env.client(&proxy.endpoint_url(), policy);
    let m = env.mount_with(client, test_options());
    // Cut bodies and 503 bursts on the GETs that follow.
    proxy.push(
        FaultRule::new(FaultKind::CutBody {
            after_body_bytes: 300_000,
        })
        .method("GET")
        .times(6),
    );
    proxy.push(
        FaultRule::new(FaultKind::ServiceUnavailable)
            .method("GET")
            .times(8),
    );
    proxy.push(
        FaultRule::new(FaultKind::Stall {
            after_body_bytes: 10_000,
            duration: Duration::from_secs(3),
        })
        .method("GET")
        .times(1),
    );
    assert_eq!(sha256(&read_all(&m.join("a.bin")).expect("a")), sha256(&a));
    proxy.push(
        FaultRule::new(FaultKind::ServiceUnavailable)
            .method("GET")
            .times(3),
    );
    proxy.push(FaultRule::new(FaultKind::Reset).method("GET").times(2));
    assert_eq!(sha256(&read_all(&m.join("b.bin")).expect("b")), sha256(&b));
    for (i, d) in small.iter().enumerate() {
        if i % 5 == 0 {
            proxy.push(
                FaultRule::new(FaultKind::CutBody {
                    after_body_bytes: 1000,
                })
                .method("GET"),
            );
        }
        let got = read_all(&m.join(&format!("small/{i:02}"))).expect("small");
        assert_eq!(sha256(&got), sha256(d), "small {i}");
    }
    let s = m.unmount();
    assert!(s.retries >= 10, "faults were retried: {s}");
    assert_eq!(s.errors, 0);
}

#[test]
fn changed_object_gives_estale_and_errors_give_eio() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    env.put("will-change.bin", &pattern(3 << 20, 3));
    env.put("will-vanish.bin", &pattern(1 << 20, 4));
    env.put("steady.bin", &pattern(1 << 20, 5));
    let m = env.mount();
    // Same size, other bytes: only the ETag tells.
    env.put("will-change.bin", &pattern(3 << 20, 33));
    let err = read_all(&m.join("will-change.bin")).expect_err("changed object");
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    // Stays stale, quickly.
    let err = read_all(&m.join("will-change.bin")).expect_err("still changed");
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");

    std::fs::remove_file(env.path_of("will-vanish.bin")).expect("rm");
    let t = Instant::now();
    let err = read_all(&m.join("will-vanish.bin")).expect_err("gone object");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20));

    assert_eq!(
        read_all(&m.join("steady.bin")).expect("steady"),
        pattern(1 << 20, 5)
    );
    let s = m.unmount();
    assert!(s.errors >= 3, "{s}");
}

#[test]
fn writes_are_refused_with_erofs() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    env.put("dir/file.bin", b"hello");
    let m = env.mount();
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs(File::create(m.join("new.bin")).map(|_| ()), "create");
    erofs(
        std::fs::OpenOptions::new()
            .write(true)
            .open(m.join("dir/file.bin"))
            .map(|_| ()),
        "open for write",
    );
    erofs(
        std::fs::OpenOptions::new()
            .append(true)
            .open(m.join("dir/file.bin"))
            .map(|_| ()),
        "append",
    );
    erofs(std::fs::remove_file(m.join("dir/file.bin")), "unlink");
    erofs(std::fs::create_dir(m.join("newdir")), "mkdir");
    erofs(std::fs::remove_dir(m.join("dir")), "rmdir");
    erofs(
        std::fs::rename(m.join("dir/file.bin"), m.join("dir/other.bin")),
        "rename",
    );
    erofs(
        nix::unistd::truncate(&m.join("dir/file.bin"), 0).map_err(std::io::Error::from),
        "truncate",
    );
    erofs(std::os::unix::fs::symlink("x", m.join("link")), "symlink");
    // Reading still works, and nothing changed.
    assert_eq!(read_all(&m.join("dir/file.bin")).expect("read"), b"hello");
    let e = File::open(m.join("missing")).expect_err("missing");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn disk_cache_serves_blocks_evicted_from_memory() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    let data = pattern(24 << 20, 11);
    env.put("epoch.bin", &data);
    let cache = tempfile::tempdir().expect("cache dir");
    let client = env.client(&env.endpoint(), fast_policy());
    let m = env.mount_with(
        client,
        chute_fastfile::MountOptions {
            max_memory: 8 << 20,
            cache: Some(chute_fastfile::CacheOptions {
                dir: cache.path().to_path_buf(),
                size: Some(64 << 20),
            }),
            prefetch: Some(chute_fastfile::Prefetch::Ahead),
            // Reads must reach the daemon to be counted.
            read_path: chute_fastfile::ReadPath::Daemon,
            ..test_options()
        },
    );
    let p = m.join("epoch.bin");
    for epoch in 0..2 {
        assert_eq!(
            sha256(&read_all(&p).expect("read")),
            sha256(&data),
            "epoch {epoch}"
        );
        // Drop the kernel's copy so the next epoch asks the file system again.
        let f = File::open(&p).expect("open");
        nix::fcntl::posix_fadvise(
            &f,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .expect("fadvise");
    }
    let s = m.unmount();
    assert!(s.bytes_disk > 8 << 20, "second epoch from disk: {s}");
}
