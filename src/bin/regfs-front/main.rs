//! `regfs-front UPSTREAM [--tag-page N] [--catalog-page N] [--no-catalog] [--ignore-range]
//! [--latency-ms N] [--rate-mib N]`:
//! the test harness's fault-injecting registry front as a program, for `scripts/bench` (which
//! needs tag lists served in pages; the reference registry does not page them). Prints its URL,
//! then serves until killed. `GET /_front/requests` lists what it has forwarded.

use regfs::testkit::front::{Behavior, Front};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(upstream) = args.first().filter(|a| !a.starts_with("--")) else {
        eprintln!(
            "usage: regfs-front UPSTREAM [--tag-page N] [--catalog-page N] [--no-catalog] [--ignore-range] [--latency-ms N] [--rate-mib N]"
        );
        return std::process::ExitCode::from(2);
    };
    let number = |flag: &str| {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).and_then(|n| n.parse::<usize>().ok())
    };
    let behavior = Behavior {
        tag_page: number("--tag-page"),
        catalog_page: number("--catalog-page"),
        no_catalog: args.iter().any(|a| a == "--no-catalog"),
        ignore_range: args.iter().any(|a| a == "--ignore-range"),
        latency: std::time::Duration::from_millis(number("--latency-ms").unwrap_or(0) as u64),
        // Each connection's bodies at most this many MiB a second.
        rate: number("--rate-mib").map(|m| (m as u64) << 20),
        ..Behavior::default()
    };
    let front = Front::start(upstream, behavior);
    println!("{}", front.url);
    loop {
        std::thread::park();
    }
}
