//! What ships besides the code: the container image recipe, its build
//! context, and the examples. There is no container engine here, so the
//! Dockerfile is read as a list of instructions and its properties are
//! checked against the rest of the repository (CI's release build, Cargo's
//! output layout, the default configuration). The examples are validated
//! with `credgate check` and their interpreters, and run under `credgate run`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

// ---------------------------------------------------------------------------
// A small Dockerfile reader: instructions with continuations joined and
// comments dropped, grouped into stages.

#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    body: Vec<Instruction>,
}

impl Stage {
    fn all(&self, keyword: &str) -> impl Iterator<Item = &Instruction> {
        let keyword = keyword.to_owned();
        self.body.iter().filter(move |i| i.keyword == keyword)
    }

    fn last(&self, keyword: &str) -> Option<&Instruction> {
        self.all(keyword).last()
    }

    fn workdir(&self) -> &str {
        self.last("WORKDIR").map(|i| i.args.as_str()).unwrap_or("/")
    }

    fn copies(&self) -> Vec<Copy> {
        self.all("COPY").map(|i| Copy::parse(&i.args)).collect()
    }
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comments (and parser directives) are dropped, also inside a continuation.
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (keyword, args) = pending
                    .trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or((&pending, ""));
                out.push(Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.trim().to_owned(),
                });
                pending.clear();
            }
        }
    }
    assert!(
        pending.is_empty(),
        "the Dockerfile ends inside a continuation"
    );
    out
}

fn stages(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions(text) {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words[..] {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_owned()),
                [_] => None,
                _ => panic!("unexpected FROM {}", instruction.args),
            };
            stages.push(Stage {
                image: words[0].to_owned(),
                name,
                body: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{} before FROM", instruction.keyword))
                .body
                .push(instruction);
        }
    }
    stages
}

/// `COPY [--from=S] [--chown=..] SRC… DEST` (shell form).
#[derive(Debug)]
struct Copy {
    from: Option<String>,
    sources: Vec<String>,
    dest: String,
}

impl Copy {
    fn parse(args: &str) -> Copy {
        let mut from = None;
        let mut paths = Vec::new();
        for word in args.split_whitespace() {
            match word.strip_prefix("--") {
                Some(flag) => {
                    if let Some(stage) = flag.strip_prefix("from=") {
                        from = Some(stage.to_owned());
                    }
                }
                None => paths.push(word.to_owned()),
            }
        }
        let dest = paths.pop().expect("COPY has a destination");
        assert!(!paths.is_empty(), "COPY {args} has no source");
        Copy {
            from,
            sources: paths,
            dest,
        }
    }
}

/// An exec-form (`["a", "b"]`) instruction's words.
fn exec_form(instruction: &Instruction) -> Vec<String> {
    serde_json::from_str(&instruction.args).unwrap_or_else(|e| {
        panic!(
            "{} must be in exec form (no shell in the image): {e}",
            instruction.keyword
        )
    })
}

/// The flags of a `cargo <sub> …` command line, up to a `--`.
fn cargo_flags(command: &str, sub: &str) -> Vec<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let start = words
        .windows(2)
        .position(|w| w == ["cargo", sub])
        .unwrap_or_else(|| panic!("no `cargo {sub}` in {command}"));
    words[start + 2..]
        .iter()
        .take_while(|w| **w != "--" && !matches!(**w, "&&" | ";" | "|"))
        .filter(|w| w.starts_with("--"))
        .map(|w| (*w).to_owned())
        .collect()
}

/// The flags of the release build CI runs (`.ci/run`).
fn ci_release_flags() -> Vec<String> {
    let ci = read(".ci/run");
    let line = ci
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo ") && l.contains("--release"))
        .expect(".ci/run has a release build");
    let sub = line.split_whitespace().nth(1).unwrap();
    let mut flags = cargo_flags(line, sub);
    flags.sort();
    flags
}

struct Image {
    builder: Stage,
    runtime: Stage,
}

fn image() -> Image {
    let mut stages = stages(&read("Dockerfile"));
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    let runtime = stages.pop().unwrap();
    let builder_name = runtime
        .copies()
        .iter()
        .find_map(|c| c.from.clone())
        .expect("the runtime stage copies from a build stage");
    let builder = stages
        .into_iter()
        .find(|s| s.name.as_deref() == Some(builder_name.as_str()))
        .unwrap_or_else(|| panic!("no stage named {builder_name}"));
    Image { builder, runtime }
}

/// The `[[bin]]` name from Cargo.toml.
fn binary_name() -> String {
    let manifest = read("Cargo.toml");
    let bin = manifest
        .split("[[bin]]")
        .nth(1)
        .expect("Cargo.toml declares the binary");
    bin.lines()
        .find_map(|l| l.trim().strip_prefix("name = "))
        .expect("the binary has a name")
        .trim_matches('"')
        .to_owned()
}

fn default_config() -> credgate::config::Config {
    credgate::config::Config::parse(
        credgate::config::DEFAULT_CONFIG_YAML,
        &BTreeMap::<String, String>::new(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn dockerfile_builds_in_a_rust_stage_with_the_release_flags_of_ci() {
    let Image { builder, .. } = image();
    assert!(builder.image.starts_with("rust:"), "{}", builder.image);

    // The Rust image is recent enough for the crate's rust-version.
    let manifest = read("Cargo.toml");
    let required = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"')
        .to_owned();
    let tag = builder.image.split_once(':').unwrap().1;
    let version: Vec<u32> = tag
        .split('-')
        .next()
        .unwrap()
        .split('.')
        .map(|n| n.parse().expect("a numeric version tag"))
        .collect();
    let required: Vec<u32> = required.split('.').map(|n| n.parse().unwrap()).collect();
    assert_eq!(version[0], required[0], "{tag}");
    if let Some(minor) = version.get(1) {
        assert!(*minor >= required[1], "{tag} is older than rust-version");
    }

    // The build is CI's release build, with the same flags, into the
    // default output layout.
    let builds: Vec<&Instruction> = builder
        .all("RUN")
        .filter(|r| r.args.contains("cargo build"))
        .collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    let mut flags = cargo_flags(&builds[0].args, "build");
    flags.sort();
    let ci = ci_release_flags();
    assert!(
        ci.contains(&"--release".to_owned()) && ci.contains(&"--locked".to_owned()),
        "{ci:?}"
    );
    assert_eq!(flags, ci, "the image is built like CI's release binary");
    for env in builder.all("ENV").chain(builder.all("ARG")) {
        assert!(
            !env.args.contains("CARGO_TARGET_DIR") && !env.args.contains("CARGO_BUILD_TARGET"),
            "the output layout is changed: {env:?}"
        );
    }

    // Everything the build reads is copied in: the manifest, the lock file,
    // the sources, and the files the sources embed.
    let workdir = PathBuf::from(builder.workdir());
    let copied: Vec<PathBuf> = builder
        .copies()
        .iter()
        .filter(|c| c.from.is_none())
        .flat_map(|c| {
            c.sources
                .iter()
                .map(|s| PathBuf::from(s.trim_end_matches('/')))
        })
        .collect();
    let covered = |path: &Path| copied.iter().any(|c| path.starts_with(c));
    let mut needed = vec![
        PathBuf::from("Cargo.toml"),
        PathBuf::from("Cargo.lock"),
        PathBuf::from("src/main.rs"),
        PathBuf::from("src/lib.rs"),
    ];
    needed.extend(embedded_files());
    for path in &needed {
        assert!(
            repo().join(path).is_file(),
            "{} does not exist",
            path.display()
        );
        assert!(
            covered(path),
            "the build stage does not copy {}",
            path.display()
        );
    }
    for copy in builder.copies() {
        for source in &copy.sources {
            // `COPY X ./X` keeps the repository's layout under the workdir.
            let dest = workdir.join(&copy.dest);
            let lands = if copy.dest.ends_with('/') {
                dest.join(Path::new(source).file_name().unwrap())
            } else {
                dest
            };
            let normal: PathBuf = lands
                .components()
                .filter(|c| c.as_os_str() != ".")
                .collect();
            assert_eq!(
                normal,
                workdir.join(source.trim_end_matches('/')),
                "{copy:?}"
            );
        }
    }
}

/// Files the sources embed with `include_str!`/`include_bytes!`, relative
/// to the repository.
fn embedded_files() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![repo().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for macro_ in ["include_str!(\"", "include_bytes!(\""] {
                for (at, _) in text.match_indices(macro_) {
                    let rest = &text[at + macro_.len()..];
                    let target = &rest[..rest.find('"').unwrap()];
                    let absolute = path.parent().unwrap().join(target);
                    let absolute = std::fs::canonicalize(&absolute)
                        .unwrap_or_else(|e| panic!("{}: {e}", absolute.display()));
                    let root = std::fs::canonicalize(repo()).unwrap();
                    found.push(absolute.strip_prefix(&root).unwrap().to_path_buf());
                }
            }
        }
    }
    assert!(!found.is_empty(), "the default configuration is embedded");
    found
}

#[test]
fn dockerfile_runtime_stage_is_minimal_and_runs_as_a_numeric_non_root_user() {
    let Image { runtime, .. } = image();
    assert!(
        runtime.image.contains("distroless") || runtime.image.contains("-slim"),
        "a minimal base: {}",
        runtime.image
    );
    assert!(
        !runtime.image.starts_with("rust:"),
        "no toolchain at runtime"
    );
    assert_eq!(runtime.all("ADD").count(), 0);
    if runtime.image.contains("distroless") {
        assert_eq!(runtime.all("RUN").count(), 0, "distroless has no shell");
    }

    let user = runtime.last("USER").expect("the runtime stage sets USER");
    let position = |i: &Instruction| runtime.body.iter().position(|b| std::ptr::eq(b, i));
    let user_at = position(user).unwrap();
    for keyword in ["ENTRYPOINT", "CMD"] {
        let at = position(runtime.last(keyword).unwrap()).unwrap();
        assert!(user_at < at, "USER comes before {keyword}");
    }
    let ids: Vec<u32> = user
        .args
        .split(':')
        .map(|id| {
            id.parse()
                .unwrap_or_else(|_| panic!("USER {} must be numeric", user.args))
        })
        .collect();
    assert!(
        !ids.is_empty() && ids.iter().all(|id| *id != 0),
        "USER {} is root",
        user.args
    );

    // The ports the image documents are the ones the default configuration uses.
    let exposed: Vec<u16> = runtime
        .all("EXPOSE")
        .flat_map(|e| e.args.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().expect("a port"))
        .collect();
    let config = default_config();
    for port in [config.listen.port(), config.admin.listen.port()] {
        assert!(exposed.contains(&port), "{port} not in EXPOSE {exposed:?}");
    }
    assert!(
        exposed.contains(&8080) && exposed.contains(&8081),
        "{exposed:?}"
    );
}

#[test]
fn dockerfile_copies_only_the_release_binary_and_the_default_configuration() {
    let Image { builder, runtime } = image();
    let copies = runtime.copies();
    assert_eq!(copies.len(), 2, "{copies:?}");
    let entrypoint = exec_form(runtime.last("ENTRYPOINT").expect("ENTRYPOINT"));
    let cmd = exec_form(runtime.last("CMD").expect("CMD"));
    assert_eq!(entrypoint, ["/usr/local/bin/credgate"]);
    assert_eq!(cmd, ["serve", "--config", "/etc/credgate/credgate.yaml"]);

    // The binary: Cargo's release output in the build stage's workdir.
    let binary = copies.iter().find(|c| c.from.is_some()).unwrap();
    let bin = binary_name();
    let built = Path::new(builder.workdir())
        .join("target/release")
        .join(&bin);
    assert_eq!(binary.sources, [built.display().to_string()]);
    assert_eq!(binary.dest, entrypoint[0]);
    // The same layout Cargo uses here: <target dir>/<profile>/<binary name>.
    let here = Path::new(CREDGATE);
    assert_eq!(here.file_name().unwrap().to_str(), Some(bin.as_str()));
    let profile = here.parent().unwrap().file_name().unwrap();
    assert!(
        profile == "debug" || profile == "release",
        "{}",
        here.display()
    );
    assert_eq!(built.parent().unwrap().file_name().unwrap(), "release");
    assert_eq!(
        built
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .file_name()
            .unwrap(),
        "target"
    );

    // The configuration: the repository's default, where CMD points.
    let config = copies.iter().find(|c| c.from.is_none()).unwrap();
    assert_eq!(config.sources, ["config/credgate.yaml"]);
    assert!(repo().join(&config.sources[0]).is_file());
    assert_eq!(config.dest, cmd[2]);
}

/// The image the Kubernetes example (examples/kubernetes) runs: its user is
/// the sidecar's, its WORKDIR the sidecar's working directory (where the
/// configuration's relative paths, and so the emptyDir credgate writes to,
/// start), and its `lockdown` target the same binary with nft for the
/// `credgate init` container, built only when asked for.
#[test]
fn dockerfile_matches_the_kubernetes_example_and_builds_a_lockdown_target() {
    let Image { builder, runtime } = image();
    let stages = stages(&read("Dockerfile"));
    let last = stages.last().unwrap();
    assert_eq!(
        last.image, runtime.image,
        "the default target is the runtime"
    );
    let lockdown = stages
        .iter()
        .find(|s| s.name.as_deref() == Some("lockdown"))
        .expect("a stage named lockdown");
    let binary = |stage: &Stage| {
        let copies = stage.copies();
        let from_builder: Vec<&Copy> = copies
            .iter()
            .filter(|c| c.from.as_deref() == builder.name.as_deref())
            .collect();
        assert_eq!(from_builder.len(), 1, "{copies:?}");
        (
            from_builder[0].sources.clone(),
            from_builder[0].dest.clone(),
        )
    };
    assert_eq!(
        binary(lockdown),
        binary(&runtime),
        "the same release binary"
    );
    assert_eq!(
        exec_form(lockdown.last("ENTRYPOINT").expect("ENTRYPOINT")),
        exec_form(runtime.last("ENTRYPOINT").unwrap())
    );
    assert!(
        lockdown
            .all("RUN")
            .any(|r| r.args.contains("apt-get install") && r.args.contains("nftables")),
        "the lockdown target installs nft"
    );

    let user = &runtime.last("USER").unwrap().args;
    let cmd = exec_form(runtime.last("CMD").unwrap());
    for dir in support::kube::kustomizations() {
        let pod = support::kube::Pod::render(&dir);
        let at = dir.display().to_string();
        let sidecar = pod.container("credgate");
        let sc = &sidecar["securityContext"];
        assert_eq!(
            format!(
                "{}:{}",
                sc["runAsUser"].as_u64().unwrap(),
                sc["runAsGroup"].as_u64().unwrap()
            ),
            *user,
            "{at}"
        );
        assert_eq!(sidecar["workingDir"], runtime.workdir(), "{at}");
        // The configuration mounted where the image's CMD reads it.
        let args: Vec<&str> = support::kube::list(&sidecar["args"])
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args, cmd, "{at}");
        let (mount, _) = support::kube::mount_holding(&pod, sidecar, Path::new(&cmd[2]))
            .unwrap_or_else(|| panic!("{at}: {} is the image's own", cmd[2]));
        assert_eq!(mount["name"], "credgate-config", "{at}");
        // The writable state is under the image's WORKDIR.
        let state = support::kube::list(&sidecar["volumeMounts"])
            .iter()
            .find(|m| m["name"] == "credgate-state")
            .expect("the credgate-state mount");
        let state_path = state["mountPath"].as_str().unwrap();
        assert!(
            Path::new(state_path).starts_with(runtime.workdir()),
            "{at}: {state_path}"
        );
        assert!(
            pod.volume("credgate-state")["emptyDir"].is_mapping(),
            "{at}"
        );
    }
    // The base names the images the Dockerfile's comment builds.
    let pod = support::kube::Pod::render(&support::kube::root().join("base"));
    assert_eq!(pod.container("credgate")["image"], "credgate");
    assert_eq!(pod.container("credgate-init")["image"], "credgate-lockdown");
    assert!(read("Dockerfile").contains("--target lockdown -t credgate-lockdown"));
}

// ---------------------------------------------------------------------------
// .dockerignore, evaluated the way Docker does: patterns in order, the last
// match wins, `!` re-includes, and a pattern matching a directory matches
// everything under it.

fn glob_segments(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            glob_segments(&pattern[1..], path)
                || (!path.is_empty() && glob_segments(pattern, &path[1..]))
        }
        (Some(p), Some(s)) => {
            glob_one(p.as_bytes(), s.as_bytes()) && glob_segments(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

fn glob_one(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_one(&pattern[1..], name) || (!name.is_empty() && glob_one(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_one(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) => p == n && glob_one(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Whether `.dockerignore` keeps `path` (relative, `/`-separated) out of the context.
fn ignored(rules: &str, path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for line in rules.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (negated, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pattern: Vec<&str> = pattern
            .trim_start_matches('/')
            .trim_end_matches('/')
            .split('/')
            .collect();
        let hit = (1..=segments.len()).any(|n| glob_segments(&pattern, &segments[..n]));
        if hit {
            excluded = !negated;
        }
    }
    excluded
}

fn files_under(relative: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![repo().join(relative)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(repo()).unwrap();
                found.push(rel.to_str().unwrap().to_owned());
            }
        }
    }
    found
}

#[test]
fn the_ignore_matcher_follows_docker_semantics() {
    assert!(ignored("target/", "target/release/credgate"));
    assert!(ignored("/target", "target"));
    assert!(!ignored("target/", "src/target.rs"));
    assert!(ignored("*", "src/main.rs"));
    assert!(!ignored("*\n!src/", "src/cli/run.rs"));
    assert!(ignored("*\n!src/\nsrc/secret", "src/secret/x"));
    assert!(ignored("**/*.jsonl", "a/b/decisions.jsonl"));
    assert!(ignored("*.pem", "ca.pem"));
    assert!(!ignored("*.pem", "keys/ca.pem"));
}

#[test]
fn dockerignore_keeps_build_output_and_local_secrets_out_of_the_context() {
    let rules = read(".dockerignore");
    for path in [
        "target",
        "target/release/credgate",
        "target/debug/deps/credgate-0123",
        ".credgate/ca.key",
        ".credgate/admin-token",
        ".credgate/decisions.jsonl",
        ".git/config",
        "tests/clients/node_modules/undici/package.json",
    ] {
        assert!(ignored(&rules, path), "{path} would be sent to the builder");
    }
    // What the build stage copies is all there.
    let Image { builder, .. } = image();
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    for copy in builder.copies().iter().filter(|c| c.from.is_none()) {
        for source in &copy.sources {
            let source = source.trim_end_matches('/');
            if repo().join(source).is_dir() {
                needed.extend(
                    files_under(source)
                        .into_iter()
                        .filter(|f| !f.starts_with("config/") || f == "config/credgate.yaml"),
                );
            } else {
                needed.push(source.to_owned());
            }
        }
    }
    for file in embedded_files() {
        needed.push(file.to_str().unwrap().to_owned());
    }
    for path in &needed {
        assert!(
            !ignored(&rules, path),
            "{path} is needed by the build but ignored"
        );
    }
    assert!(needed.iter().any(|p| p == "src/main.rs"), "{needed:?}");
}

// ---------------------------------------------------------------------------
// examples

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn with_extension(ext: &[&str]) -> Vec<PathBuf> {
    examples()
        .into_iter()
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ext.contains(&e))
        })
        .collect()
}

/// PATH with examples/ first, where the example configs' exec programs live.
fn examples_path() -> String {
    format!(
        "{}:{}",
        repo().join("examples").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn example_configs_and_the_default_config_pass_check() {
    let mut configs = with_extension(&["yaml", "yml"]);
    assert!(
        configs.iter().any(|p| p.ends_with("credgate.github.yaml")),
        "{configs:?}"
    );
    configs.push(repo().join("config/credgate.yaml"));
    for config in configs {
        let mut cmd = credgate(["check", "--config"]);
        cmd.arg(&config)
            .current_dir(repo())
            .env("PATH", examples_path());
        let out = run_bounded(cmd, COMMAND_LIMIT);
        out.expect_code(0);
        assert!(out.stdout.contains("is valid."), "{out:?}");
        assert!(out.stdout.contains("scope "), "{out:?}");
    }
}

#[test]
fn example_scripts_are_well_formed_and_say_how_to_run_them() {
    let pycache = TempDir::new();
    let mut checked = BTreeMap::new();
    for script in examples() {
        let ext = script.extension().and_then(|e| e.to_str()).unwrap_or("");
        let mut cmd = match ext {
            "sh" => {
                let mut cmd = std::process::Command::new("bash");
                cmd.arg("-n");
                cmd
            }
            "py" => {
                let mut cmd = std::process::Command::new("python3");
                // Compiled files go to a scratch directory, not into examples/.
                cmd.args(["-m", "py_compile"])
                    .env("PYTHONPYCACHEPREFIX", pycache.path());
                cmd
            }
            "mjs" | "js" => {
                let mut cmd = std::process::Command::new("node");
                cmd.arg("--check");
                cmd
            }
            _ => continue,
        };
        cmd.arg(&script);
        let out = run_bounded(cmd, COMMAND_LIMIT);
        assert_eq!(out.code, Some(0), "{}: {out:?}", script.display());
        *checked.entry(ext.to_owned()).or_insert(0) += 1;
        let name = script.file_name().unwrap().to_str().unwrap();
        if name != "github-app-token.sh" {
            let text = std::fs::read_to_string(&script).unwrap();
            assert!(
                text.contains("credgate run --scope"),
                "{name} does not say how to run it under credgate"
            );
        }
    }
    for ext in ["sh", "py", "mjs"] {
        assert!(checked.contains_key(ext), "no .{ext} example: {checked:?}");
    }
    for name in ["curl.sh", "agent.py", "agent.mjs"] {
        assert!(repo().join("examples").join(name).is_file(), "{name}");
    }
}

/// The examples, as written, list issues through a real `credgate serve`
/// under `credgate run`, from an upstream standing in for the GitHub API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_list_issues_under_credgate_run() {
    let node_modules = repo().join("tests/clients/node_modules");
    assert!(
        node_modules.join("undici").is_dir(),
        "run `npm ci --prefix tests/clients` (tests/run.sh does) first"
    );
    let secret = test_secret();
    let files = DaemonFiles::new();
    let handler: Handler = std::sync::Arc::new(|r: &Received| {
        if r.path_and_query.starts_with("/repos/acme/app/issues?") {
            json_handler(
                r#"[{"number": 7, "title": "Flaky test in CI"}, {"number": 9, "title": "Docs typo"}]"#,
            )(r)
        } else {
            Reply {
                status: 404,
                headers: vec![],
                chunks: vec![b"not found".to_vec()],
            }
        }
    });
    let upstream = files.upstream("localhost", handler).await;
    // github-read as in examples/credgate.github.yaml, with the test
    // upstream for api.github.com and a static stand-in for the App token.
    files.write_config(&format!(
        r#"
credentials:
  github:
    static: {{ env: GITHUB_APP_TOKEN }}
scopes:
  github-read:
    - host: localhost
      port: {port}
      methods: [GET, HEAD]
      paths: ["/repos/acme/*/issues/**", "/repos/acme/*/pulls/**"]
      credential: github
      allow_private: true
"#,
        port = upstream.port()
    ));
    let d = files.serve(&[("GITHUB_APP_TOKEN", &secret)]).await;

    // Node resolves `undici` next to the script: run a copy beside the
    // test clients' node_modules.
    let node_dir = TempDir::new();
    std::fs::copy(
        repo().join("examples/agent.mjs"),
        node_dir.path().join("agent.mjs"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&node_modules, node_dir.path().join("node_modules")).unwrap();
    let node_script = node_dir.path().join("agent.mjs");

    let examples = repo().join("examples");
    let curl_sh = examples.join("curl.sh");
    let agent_py = examples.join("agent.py");
    let agents: [(&str, Vec<&str>); 3] = [
        ("curl", vec!["bash", curl_sh.to_str().unwrap()]),
        ("python", vec!["python3", agent_py.to_str().unwrap()]),
        ("node", vec!["node", node_script.to_str().unwrap()]),
    ];
    let api = format!("https://localhost:{}", upstream.port());
    for (name, command) in &agents {
        let mut cmd = d.run_cmd("github-read", command);
        cmd.env("GITHUB_API_URL", &api)
            .env("GITHUB_REPOSITORY", "acme/app");
        let out = run_cli(cmd).await;
        assert_eq!(out.code, Some(0), "{name}: {out:?}");
        assert!(out.stdout.contains("Flaky test in CI"), "{name}: {out:?}");
        assert!(
            !out.all().contains(&secret),
            "{name}: the credential reached the agent"
        );
    }
    let received = upstream.received();
    assert_eq!(received.len(), agents.len(), "{received:?}");
    for r in &received {
        assert_eq!(
            r.path_and_query,
            "/repos/acme/app/issues?state=open&per_page=5"
        );
        assert_eq!(
            r.header("authorization"),
            [format!("Bearer {secret}").as_str()]
        );
    }

    // Outside the scope, each example fails with credgate's reason.
    for (name, command) in &agents {
        let mut cmd = d.run_cmd("github-read", command);
        cmd.env("GITHUB_API_URL", &api)
            .env("GITHUB_REPOSITORY", "other-org/app");
        let out = run_cli(cmd).await;
        assert_ne!(out.code, Some(0), "{name}: {out:?}");
        assert!(out.all().contains("403"), "{name}: {out:?}");
        assert!(
            out.all().contains("other-org/app"),
            "{name}: no reason given: {out:?}"
        );
    }
    assert_eq!(
        upstream.received().len(),
        agents.len(),
        "denied requests went upstream"
    );
    assert!(!d.log_text().contains(&secret));
}
