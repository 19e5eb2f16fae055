//! What the `cargo bench` benchmarks share: how they start, and how each writes its section
//! of BENCHMARKS.md.

/// Runs `bench` on a multi-threaded runtime when started by `cargo bench` (which passes
/// `--bench`); `cargo test --all-targets` runs the binary unoptimised without it, where the
/// figures would mean nothing and BENCHMARKS.md must not be rewritten.
pub fn main<F: std::future::Future<Output = ()>>(name: &str, bench: impl FnOnce() -> F) {
    if !std::env::args().any(|a| a == "--bench") {
        println!("{name}: skipped (a benchmark: run it with `cargo bench --bench {name}`)");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bench());
}

/// Replaces the section that starts with `heading` (up to the next `## `) by `section`.
pub fn write_section(heading: &str, section: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let new = match old.find(heading) {
        Some(start) => {
            let end = old[start + 3..]
                .find("\n## ")
                .map_or(old.len(), |e| start + 3 + e + 1);
            format!("{}{section}\n{}", &old[..start], &old[end..])
        }
        None => format!(
            "{}{}{section}",
            old,
            if old.ends_with("\n\n") { "" } else { "\n" }
        ),
    };
    std::fs::write(path, new.trim_end().to_string() + "\n").expect("write BENCHMARKS.md");
}
