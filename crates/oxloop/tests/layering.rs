//! Keeps the crate's layering (docs/design.md, "Layers") true: a module of the crate
//! may use only modules of lower layers, so no two modules import each other.

use std::collections::BTreeSet;
use std::path::Path;

/// Each module with its layer; a module may use only modules of lower layers.
const LAYERS: &[(&str, u32)] = &[
    ("reactor", 0),
    ("timers", 0),
    ("event_loop", 1),
    ("task", 2),
    ("io", 3),
    ("net", 4),
    ("process", 4),
    ("protocol", 5),
    ("source", 5),
    ("wire", 5),
    ("cluster", 6),
];

/// The crate root's re-exports, and the module each comes from.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("EventLoop", "event_loop"),
    ("Handle", "event_loop"),
    ("KeepAlive", "event_loop"),
    ("LoopClosed", "event_loop"),
    ("LoopRemote", "event_loop"),
    ("CallbackPanic", "event_loop"),
];

fn layer(module: &str) -> u32 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .unwrap_or_else(|| panic!("module `{module}` has no layer in LAYERS"))
        .1
}

/// The modules a piece of code names through `crate::` (comments skipped).
fn used_modules(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                None => vec![rest],
            };
            for name in names {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let module = ROOT_ITEMS
                    .iter()
                    .find(|(item, _)| *item == name)
                    .map_or(name.clone(), |(_, module)| module.to_string());
                if !module.is_empty() {
                    used.insert(module);
                }
            }
        }
    }
    used
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (module, own) in LAYERS {
        let mut files = Vec::new();
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file); // a module of one file
        } else {
            sources(&src.join(module), &mut files);
        }
        assert!(!files.is_empty(), "no sources for `{module}`");
        for file in files {
            let code = std::fs::read_to_string(&file).unwrap();
            for used in used_modules(&code) {
                if used != *module && layer(&used) >= *own {
                    wrong.push(format!("{} uses {used}", file.display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_imports() {
    let used = used_modules(
        "use crate::{EventLoop, Handle};\nuse crate::reactor::Interest;\n// crate::net\n",
    );
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["event_loop", "reactor"]
    );
}
