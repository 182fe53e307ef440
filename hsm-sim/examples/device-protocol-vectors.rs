//! Recomputes the device protocol's test vectors from the `input.*` values
//! of `docs/device-protocol.md` and prints each block; with `--write`,
//! rewrites the blocks in the document in place (each follows its
//! `<!-- vectors: GROUP -->` marker):
//! `cargo run -p hsm-sim --example device-protocol-vectors -- --write`.
//! Inputs the document lacks come from the defaults.

#[path = "../tests/support/vectors.rs"]
mod vectors;

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/device-protocol.md");
    let doc = std::fs::read_to_string(path).ok();
    // The document's inputs win; inputs it does not have yet (a new group)
    // come from the defaults.
    let mut inputs = vectors::Inputs::defaults();
    if let Some(all) = doc.as_deref().map(vectors::parse_document) {
        inputs
            .0
            .extend(all.into_iter().filter(|(k, _)| k.starts_with("input.")));
    }
    let groups = vectors::compute(&inputs).groups;
    let write = std::env::args().any(|a| a == "--write");
    match (write, doc) {
        (true, Some(mut doc)) => {
            for (group, entries) in &groups {
                let marker = format!("<!-- vectors: {group} -->\n```test-vectors\n");
                let Some(start) = doc.find(&marker) else {
                    eprintln!("no marker for {group} in {path}");
                    std::process::exit(1);
                };
                let body = start + marker.len();
                let Some(len) = doc[body..].find("```") else {
                    eprintln!("unterminated block {group}");
                    std::process::exit(1);
                };
                doc.replace_range(body..body + len, &vectors::format_group(entries));
            }
            if let Err(e) = std::fs::write(path, doc) {
                eprintln!("cannot write {path}: {e}");
                std::process::exit(1);
            }
        }
        _ => {
            for (group, entries) in &groups {
                println!(
                    "<!-- vectors: {group} -->\n```test-vectors\n{}```\n",
                    vectors::format_group(entries)
                );
            }
        }
    }
}
