//! `regfs-fixtures REGISTRY_URL [--bench] [--load] [--distro] [--busybox]`: push regfs's sample images (see
//! `regfs::testkit::fixtures`) to a registry, and print a JSON summary of what was pushed.
//! `--distro` adds `distro/debian`, rebuilt from this machine's dpkg (cached in
//! `target/regfs-distro/`, or `$REGFS_DISTRO_CACHE`). `--busybox` adds `run/busybox:v1`, built
//! from this machine's `busybox-static`.
//! `REGFS_FIXTURES_AUTH=user:password` pushes with Basic auth.
//! `regfs-fixtures --public-key SEED` prints the PEM public key of the testkit's signing key of
//! `SEED` (the `sig/…` fixtures are signed by `trusted_seed`'s), for a policy to name.

use std::process::ExitCode;

use regfs::testkit::fixtures::{Opts, push};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, seed] = args.as_slice()
        && flag == "--public-key"
    {
        use regfs::testkit::fixtures::sigkeys;
        print!("{}", sigkeys::public_pem(&sigkeys::signing_key(seed)));
        return ExitCode::SUCCESS;
    }
    let Some(url) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: regfs-fixtures REGISTRY_URL [--bench] [--load] [--distro] [--busybox]");
        return ExitCode::from(2);
    };
    let basic = std::env::var("REGFS_FIXTURES_AUTH")
        .ok()
        .and_then(|up| up.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let flag = |f: &str| args.iter().any(|a| a == f);
    let opts = Opts {
        basic,
        bench: flag("--bench"),
        load: flag("--load"),
        distro: flag("--distro"),
        busybox: flag("--busybox"),
    };
    match push(url, &opts) {
        Ok(s) => {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("regfs-fixtures: {e}");
            ExitCode::FAILURE
        }
    }
}
