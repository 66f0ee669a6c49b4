//! Rust anchor: the `threadpool` crate, results back through std `mpsc` channels (how
//! its users get a value back: one channel per submitter, each job sends its result).
//! `bench_rust WORKLOAD N`; prints `RESULT ...` lines like the C programs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use threadpool::ThreadPool;

static mut WORKLOAD: &str = "?";

fn workload() -> &'static str {
    // SAFETY: written once in main before any other thread exists.
    unsafe { WORKLOAD }
}

macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            eprintln!("FAIL {}/rust-threadpool: check failed: {}", workload(), stringify!($cond));
            println!("FAIL workload={} impl=rust-threadpool reason=check_failed_at_line_{}", workload(), line!());
            std::process::exit(2);
        }
    };
}

fn result(value: f64, unit: &str, n: u64) {
    println!("RESULT workload={} impl=rust-threadpool value={:.6e} unit={} n={}", workload(), value, unit, n);
}

fn threads() -> usize {
    std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

fn env_usize(name: &str, def: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(def)
}

fn sum_upto(n: u64) -> u64 {
    n * (n - 1) / 2
}

fn sum_sq_upto(n: u64) -> u64 {
    ((n as u128 - 1) * n as u128 * (2 * n as u128 - 1) / 6) as u64
}

fn spin_ns(ns: u64) {
    if ns == 0 {
        return;
    }
    let end = Instant::now() + Duration::from_nanos(ns);
    while Instant::now() < end {}
}

fn rss_bytes() -> i64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(-1);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i64
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_utime.tv_sec as f64 + ru.ru_utime.tv_usec as f64 * 1e-6 + ru.ru_stime.tv_sec as f64 + ru.ru_stime.tv_usec as f64 * 1e-6
    }
}

fn warm_up(pool: &ThreadPool, tasks: u64) {
    let (tx, rx) = channel();
    for i in 0..tasks {
        let tx = tx.clone();
        pool.execute(move || tx.send(i).unwrap());
    }
    for _ in 0..tasks {
        rx.recv().unwrap();
    }
}

fn w1(n: u64) {
    let pool = ThreadPool::new(threads());
    warm_up(&pool, 64);
    let t0 = Instant::now();
    let (tx, rx) = channel();
    for i in 0..n {
        let tx = tx.clone();
        pool.execute(move || tx.send(i).unwrap());
    }
    let mut sum = 0u64;
    for _ in 0..n {
        sum += rx.recv().unwrap();
    }
    let t = t0.elapsed().as_secs_f64();
    check!(sum == sum_upto(n));
    pool.join();
    result(n as f64 / t, "tasks/s", n);
}

fn w2(n: u64) {
    let pool = ThreadPool::new(threads());
    warm_up(&pool, 16);
    let (tx, rx) = channel();
    let mut sum = 0u64;
    let t0 = Instant::now();
    for i in 0..n {
        let tx = tx.clone();
        pool.execute(move || tx.send(i).unwrap());
        sum += rx.recv().unwrap();
    }
    let t = t0.elapsed().as_secs_f64();
    check!(sum == sum_upto(n));
    result(t / n as f64 * 1e6, "us/roundtrip", n);
}

/// W3: one job per chunk returns its squares; the submitter puts them in input order.
fn w3(n: u64) {
    let pool = ThreadPool::new(threads());
    warm_up(&pool, 64);
    let chunk = env_usize("BENCH_CHUNK", 1000) as u64;
    let input: Arc<Vec<u64>> = Arc::new((0..n).collect());
    let t0 = Instant::now();
    let (tx, rx) = channel::<(usize, Vec<u64>)>();
    let chunks = n.div_ceil(chunk) as usize;
    for c in 0..chunks {
        let tx = tx.clone();
        let input = Arc::clone(&input);
        pool.execute(move || {
            let lo = c * chunk as usize;
            let hi = (lo + chunk as usize).min(input.len());
            let out: Vec<u64> = input[lo..hi].iter().map(|x| x * x).collect();
            tx.send((c, out)).unwrap();
        });
    }
    let mut parts: Vec<Option<Vec<u64>>> = vec![None; chunks];
    for _ in 0..chunks {
        let (c, v) = rx.recv().unwrap();
        parts[c] = Some(v);
    }
    let mut sum = 0u64;
    let mut i = 0u64;
    for p in parts {
        for x in p.unwrap() {
            check!(x == i * i);
            sum += x;
            i += 1;
        }
    }
    let t = t0.elapsed().as_secs_f64();
    check!(i == n && sum == sum_sq_upto(n));
    result(n as f64 / t, "items/s", n);
}

/// W4: the channel delivers results in completion order.
fn w4(n: u64) {
    let pool = ThreadPool::new(threads());
    warm_up(&pool, 64);
    let t0 = Instant::now();
    let (tx, rx) = channel();
    for i in 0..n {
        let tx = tx.clone();
        pool.execute(move || {
            spin_ns((i % 7) * 200);
            tx.send(i).unwrap()
        });
    }
    let mut sum = 0u64;
    for _ in 0..n {
        sum += rx.recv().unwrap();
    }
    let t = t0.elapsed().as_secs_f64();
    check!(sum == sum_upto(n));
    result(n as f64 / t, "tasks/s", n);
}

/// W5: no done callbacks in threadpool; the job's last statement bumps the counter, and
/// the one that reaches n tells the waiting thread.
fn w5(n: u64) {
    let pool = ThreadPool::new(threads());
    warm_up(&pool, 64);
    let counter = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = channel::<()>();
    let t0 = Instant::now();
    for _ in 0..n {
        let counter = Arc::clone(&counter);
        let done_tx = done_tx.clone();
        pool.execute(move || {
            if counter.fetch_add(1, Ordering::AcqRel) + 1 == n as usize {
                done_tx.send(()).unwrap();
            }
        });
    }
    done_rx.recv().unwrap();
    let t = t0.elapsed().as_secs_f64();
    check!(counter.load(Ordering::Acquire) == n as usize);
    result(n as f64 / t, "tasks/s", n);
}

fn w6(n: u64) {
    let pool = ThreadPool::new(threads());
    warm_up(&pool, 64);
    const K: u64 = 4;
    let per = n / K;
    let start = Arc::new(Barrier::new(K as usize + 1));
    let handles: Vec<_> = (0..K)
        .map(|_| {
            let pool = pool.clone();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let (tx, rx) = channel();
                start.wait();
                for i in 0..per {
                    let tx = tx.clone();
                    pool.execute(move || tx.send(i).unwrap());
                }
                (0..per).map(|_| rx.recv().unwrap()).sum::<u64>()
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let sums: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let t = t0.elapsed().as_secs_f64();
    for s in sums {
        check!(s == sum_upto(per));
    }
    result((per * K) as f64 / t, "tasks/s", n);
}

/// W7: one worker blocked on a gate; n jobs queued, each holding a clone of the result
/// channel's sender (what a pending "future" is with this crate).
fn w7(n: u64) {
    let pool = ThreadPool::new(1);
    warm_up(&pool, 4);
    let (gate_tx, gate_rx) = channel::<()>();
    let (started_tx, started_rx) = channel::<()>();
    pool.execute(move || {
        started_tx.send(()).unwrap();
        gate_rx.recv().unwrap();
    });
    started_rx.recv().unwrap();
    let rss0 = rss_bytes();
    let (tx, rx) = channel();
    for _ in 0..n {
        let tx = tx.clone();
        pool.execute(move || tx.send(1u64).unwrap());
    }
    let rss1 = rss_bytes();
    check!(pool.queued_count() == n as usize);
    gate_tx.send(()).unwrap();
    let sum: u64 = (0..n).map(|_| rx.recv().unwrap()).sum();
    check!(sum == n);
    result((rss1 - rss0) as f64 / n as f64, "bytes/future", n);
}

fn w8(seconds: u64) {
    let workers = env_usize("BENCH_IDLE_WORKERS", 32);
    let pool = ThreadPool::new(workers);
    let barrier = Arc::new(Barrier::new(workers));
    let (tx, rx) = channel();
    for _ in 0..workers {
        let barrier = Arc::clone(&barrier);
        let tx = tx.clone();
        pool.execute(move || {
            barrier.wait();
            tx.send(1usize).unwrap();
        });
    }
    let ok: usize = (0..workers).map(|_| rx.recv().unwrap()).sum();
    check!(ok == workers);
    std::thread::sleep(Duration::from_millis(200));
    let c0 = cpu_seconds();
    std::thread::sleep(Duration::from_secs(seconds));
    let ms = (cpu_seconds() - c0) * 1e3;
    check!(pool.active_count() == 0);
    result(ms, "ms-cpu", seconds);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: {} WORKLOAD N", args[0]);
        std::process::exit(64);
    }
    let w: &'static str = Box::leak(args[1].clone().into_boxed_str());
    // SAFETY: single-threaded here.
    unsafe { WORKLOAD = w };
    let n: u64 = args[2].parse().expect("N");
    match w {
        "W1" => w1(n),
        "W2" => w2(n),
        "W3" => w3(n),
        "W4" => w4(n),
        "W5" => w5(n),
        "W6" => w6(n),
        "W7" => w7(n),
        "W8" => w8(n),
        _ => println!("NA workload={} impl=rust-threadpool reason=no process pool", w),
    }
}
