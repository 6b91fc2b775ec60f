//! `chute completions bash|fish` and `chute man`: shell completions and a man
//! page, generated from the same clap definition the parser uses, so they never
//! drift from the flags. Written here rather than with a generator crate to keep
//! the binary's dependencies to what it already builds; they cover what users
//! type most: subcommands, flags and their value names.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Arg, Args, Command, CommandFactory, ValueEnum};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Fish,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let cmd = crate::cli::Cli::command();
    let script = match args.shell {
        Shell::Bash => bash(&cmd),
        Shell::Fish => fish(&cmd),
    };
    print!("{script}");
    Ok(ExitCode::SUCCESS)
}

pub fn man() -> anyhow::Result<ExitCode> {
    print!("{}", man_page(&crate::cli::Cli::command()));
    Ok(ExitCode::SUCCESS)
}

fn visible_subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands().filter(|c| !c.is_hide_set())
}

fn visible_flags(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional())
}

/// `--long` and `-s` spellings of a flag.
fn spellings(a: &Arg) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(l) = a.get_long() {
        out.push(format!("--{l}"));
    }
    if let Some(s) = a.get_short() {
        out.push(format!("-{s}"));
    }
    out
}

fn bash(cmd: &Command) -> String {
    let name = cmd.get_name();
    let subs: Vec<&str> = visible_subcommands(cmd).map(Command::get_name).collect();
    let global: Vec<String> = visible_flags(cmd).flat_map(spellings).collect();
    let mut cases = String::new();
    for sub in visible_subcommands(cmd) {
        let flags: Vec<String> = visible_flags(sub).flat_map(spellings).collect();
        let _ = writeln!(
            cases,
            "        {}) opts=\"{} {}\" ;;",
            sub.get_name(),
            flags.join(" "),
            global.join(" ")
        );
    }
    format!(
        r#"# bash completion for {name}; install: {name} completions bash > /etc/bash_completion.d/{name}
_{name}() {{
    local cur sub opts i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    sub=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            -*) ;;
            *) sub="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    case "$sub" in
        "") opts="{subs} {global} --help --version" ;;
{cases}        *) opts="" ;;
    esac
    if [[ "$cur" == -* || -z "$sub" ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F _{name} {name}
"#,
        subs = subs.join(" "),
        global = global.join(" "),
    )
}

fn fish(cmd: &Command) -> String {
    let name = cmd.get_name();
    let mut out = format!("# fish completion for {name}; install: {name} completions fish > ~/.config/fish/completions/{name}.fish\n");
    let subs: Vec<&str> = visible_subcommands(cmd).map(Command::get_name).collect();
    let none = format!("not __fish_seen_subcommand_from {}", subs.join(" "));
    for sub in visible_subcommands(cmd) {
        let _ = writeln!(
            out,
            "complete -c {name} -n '{none}' -f -a {} -d {}",
            sub.get_name(),
            fish_quote(&about(sub))
        );
    }
    for a in visible_flags(cmd) {
        let _ = writeln!(out, "complete -c {name}{}", fish_flag(a));
    }
    for sub in visible_subcommands(cmd) {
        for a in visible_flags(sub) {
            let _ = writeln!(
                out,
                "complete -c {name} -n '__fish_seen_subcommand_from {}'{}",
                sub.get_name(),
                fish_flag(a)
            );
        }
    }
    out
}

fn fish_flag(a: &Arg) -> String {
    let mut s = String::new();
    if let Some(l) = a.get_long() {
        let _ = write!(s, " -l {l}");
    }
    if let Some(c) = a.get_short() {
        let _ = write!(s, " -s {c}");
    }
    if a.get_action().takes_values() {
        s.push_str(" -r");
    }
    if let Some(h) = a.get_help() {
        let _ = write!(s, " -d {}", fish_quote(&h.to_string()));
    }
    s
}

fn fish_quote(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    format!("'{}'", first.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn about(cmd: &Command) -> String {
    cmd.get_about().map(|a| a.to_string()).unwrap_or_default()
}

/// roff escapes: backslashes, and a leading `.` or `'` that would be a request.
fn roff(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn man_page(cmd: &Command) -> String {
    let name = cmd.get_name();
    let mut out = String::new();
    let _ = writeln!(
        out,
        ".TH {} 1 \"\" \"{}\" \"User Commands\"",
        name.to_uppercase(),
        roff(crate::VERSION)
    );
    let _ = writeln!(out, ".SH NAME\n{name} \\- {}", roff(&about(cmd)));
    let _ = writeln!(
        out,
        ".SH SYNOPSIS\n.B {name}\n[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]"
    );
    let _ = writeln!(out, ".SH GLOBAL OPTIONS");
    for a in visible_flags(cmd) {
        flag_entry(&mut out, a);
    }
    let _ = writeln!(out, ".SH COMMANDS");
    for sub in visible_subcommands(cmd) {
        let _ = writeln!(
            out,
            ".SS \"{name} {}\"\n{}",
            sub.get_name(),
            roff(&about(sub))
        );
        for a in visible_flags(sub) {
            flag_entry(&mut out, a);
        }
    }
    let _ = writeln!(
        out,
        ".SH EXIT STATUS\n0 success; 2 bad usage or bad input; 3 the data source could not be \
         reached or read; for \\fBrun\\fR, otherwise the training command's own exit code.\n\
         .SH SEE ALSO\nThe repository's doc/CONFIGURATION.md and doc/SEMANTICS.md."
    );
    out
}

fn flag_entry(out: &mut String, a: &Arg) {
    let mut head = spellings(a)
        .iter()
        .map(|s| format!("\\fB{}\\fR", roff(s)))
        .collect::<Vec<_>>()
        .join(", ");
    if a.get_action().takes_values() {
        if let Some(v) = a.get_value_names().and_then(|v| v.first()) {
            let _ = write!(head, " \\fI{}\\fR", roff(v));
        }
    }
    let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
    let _ = writeln!(out, ".TP\n{head}\n{}", roff(&help));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_man_page_list_every_visible_subcommand_and_flag() {
        let cmd = crate::cli::Cli::command();
        let (b, f, m) = (bash(&cmd), fish(&cmd), man_page(&cmd));
        for sub in visible_subcommands(&cmd) {
            assert!(
                b.contains(&format!("        {}) opts=", sub.get_name())),
                "bash: {}",
                sub.get_name()
            );
            assert!(
                f.contains(&format!("-a {} ", sub.get_name())),
                "fish: {}",
                sub.get_name()
            );
            assert!(
                m.contains(&format!(".SS \"chute {}\"", sub.get_name())),
                "man: {}",
                sub.get_name()
            );
            for a in visible_flags(sub) {
                if let Some(l) = a.get_long() {
                    assert!(b.contains(&format!("--{l}")), "bash lacks --{l}");
                    assert!(f.contains(&format!("-l {l}")), "fish lacks --{l}");
                    assert!(
                        m.contains(&format!("\\fB\\-\\-{}\\fR", l.replace('-', "\\-"))),
                        "man lacks --{l}"
                    );
                }
            }
        }
        assert!(
            !b.contains("completions) opts=") && !m.contains("chute man\""),
            "the hidden commands stay hidden"
        );
        assert!(m.starts_with(".TH CHUTE 1"));
    }
}
