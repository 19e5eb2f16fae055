//! Writes one benchmark's section into BENCHMARKS.md, replacing the section of the same
//! heading or adding it at the end. Shared by the `cargo bench` benchmarks.

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
