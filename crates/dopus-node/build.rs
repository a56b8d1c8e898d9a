//! Points the embedded-UI folder at web/dist when it has been built, and otherwise at a generated
//! placeholder page that says how to build it, so the binary always compiles.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dist = manifest.join("../../web/dist");
    println!("cargo:rerun-if-changed=../../web/dist");
    let folder = if dist.join("index.html").is_file() {
        dist
    } else {
        let out =
            PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("web-placeholder");
        let _ = std::fs::create_dir_all(&out);
        let _ = std::fs::write(
            out.join("index.html"),
            "<!doctype html><meta charset=utf-8><title>DiscordOpus</title>\
             <p>The web UI was not built into this binary. Run <code>./scripts/build-web.sh</code> \
             and rebuild, or use <code>./scripts/run.sh</code>.</p>",
        );
        out
    };
    println!("cargo:rustc-env=DOPUS_WEB_DIST={}", folder.display());
}
