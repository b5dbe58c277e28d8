"""`orchesjob completion bash|zsh|fish`: shell completion scripts written from the argument table (arguments.py).

Each script knows the commands, each command's options (with their descriptions where the shell shows them), the
values an option can take where the table names them (`--stream stdout|stderr`, `--status STATUS`, `--format
json|table`, a directory for `--cwd`), the positional argument of `help` (a command) and `completion` (a shell), and,
after `start ... --`, the commands on the PATH. Nothing is hand-written per command, so a flag added to the table is
completed by all three shells.
"""

from __future__ import annotations

from .arguments import COMMANDS, MULTI, POSITIONAL, SHORT, SWITCH, words

# options whose value is a path
_DIRS = {"DIR"}


def script(shell: str) -> str:
    return {"bash": bash, "zsh": zsh, "fish": fish}[shell]()


def _values(metavar: str) -> str:
    return " ".join(words(metavar))


# -- bash -----------------------------------------------------------------------------------------------------------
def bash() -> str:
    value_cases = []
    option_cases = []
    positional_cases = []
    for name, (_, spec, _) in COMMANDS.items():
        opts = list(spec) + list(SHORT.get(name, {})) + ["--help"]
        option_cases.append("        %s) opts=%s ;;" % (name, _sh(" ".join(opts))))
        for flag, (kind, metavar, _) in spec.items():
            if kind == SWITCH:
                continue
            if metavar in _DIRS:
                action = 'COMPREPLY=($(compgen -d -- "$cur"))'
            elif words(metavar):
                action = 'COMPREPLY=($(compgen -W %s -- "$cur"))' % _sh(_values(metavar))
            else:
                action = "COMPREPLY=()"
            value_cases.append("        %s:%s) %s; return ;;" % (name, flag, action))
        if name in POSITIONAL and words(POSITIONAL[name][0]):
            positional_cases.append(
                '        %s) COMPREPLY=($(compgen -W %s -- "$cur")) ;;' % (name, _sh(_values(POSITIONAL[name][0])))
            )
    return _BASH % {
        "commands": _sh(" ".join(COMMANDS)),
        "value_cases": "\n".join(value_cases),
        "option_cases": "\n".join(option_cases),
        "positional_cases": "\n".join(positional_cases),
    }


def _sh(text: str) -> str:
    """A single-quoted word for sh/bash/zsh."""
    return "'" + _inner(text) + "'"


def _inner(text: str) -> str:
    """Text to go between single quotes in sh/bash/zsh."""
    return text.replace("'", "'\\''")


_BASH = r"""# bash completion for orchesjob (written by `orchesjob completion bash`)
_orchesjob() {
    local cur prev flag cmd i
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    # the command: the first word after orchesjob; after `start ... --`, the job's own command line
    cmd=
    for ((i = 1; i < COMP_CWORD; i++)); do
        if [[ -z $cmd ]]; then
            case ${COMP_WORDS[i]} in -*) ;; *) cmd=${COMP_WORDS[i]} ;; esac
        elif [[ $cmd == start && ${COMP_WORDS[i]} == -- ]]; then
            if ((i == COMP_CWORD - 1)); then
                COMPREPLY=($(compgen -c -- "$cur"))
            else
                COMPREPLY=($(compgen -f -- "$cur"))
            fi
            return
        fi
    done
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W %(commands)s -- "$cur"))
        return
    fi
    # a value: `--flag VALUE`, or `--flag=VALUE` (bash splits the `=` off as a word of its own)
    flag=$prev
    if [[ $cur == = ]]; then
        flag=$prev
        cur=
    elif [[ $prev == = ]] && ((COMP_CWORD >= 2)); then
        flag=${COMP_WORDS[COMP_CWORD-2]}
    fi
    case "$cmd:$flag" in
%(value_cases)s
    esac
    local opts=
    case $cmd in
%(option_cases)s
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case $cmd in
%(positional_cases)s
        *) COMPREPLY=() ;;
    esac
}
complete -F _orchesjob orchesjob
"""


# -- zsh ------------------------------------------------------------------------------------------------------------
def _zq(text: str) -> str:
    """Text inside an _arguments spec's [description] or a _describe item: its special characters escaped."""
    for ch in "\\[]:":
        text = text.replace(ch, "\\" + ch)
    return text


def zsh() -> str:
    described = " ".join(_sh("%s:%s" % (name, _zq(summary))) for name, (summary, _, _) in COMMANDS.items())
    cases = []
    for name, (_, spec, takes_command) in COMMANDS.items():
        specs = []
        short = {long: s for s, long in SHORT.get(name, {}).items()}
        for flag, (kind, metavar, text) in spec.items():
            star = "*" if kind == MULTI else ""
            if kind == SWITCH:
                forms = [flag] + ([short[flag]] if flag in short else [])
                if len(forms) > 1:
                    specs.append("'(%s)'{%s}'[%s]'" % (" ".join(forms), ",".join(forms), _inner(_zq(text))))
                else:
                    specs.append(_sh("%s[%s]" % (flag, _zq(text))))
                continue
            if metavar in _DIRS:
                action = "_files -/"
            elif words(metavar):
                action = "(%s)" % _values(metavar)
            else:
                action = " "
            specs.append(_sh("%s%s=[%s]:%s:%s" % (star, flag, _zq(text), _zq(metavar.lower()), action)))
        specs.append(_sh("(- *)--help[show the help]"))
        if name in POSITIONAL:
            metavar, _, text = POSITIONAL[name]
            choices = words(metavar)
            specs.append(_sh("1:%s:%s" % (_zq(text), "(%s)" % " ".join(choices) if choices else " ")))
        if takes_command:
            specs.append(_sh("*::command:_normal"))
        cases.append("    %s)\n      _arguments -s \\\n        %s\n      ;;" % (name, " \\\n        ".join(specs)))
    return _ZSH % {"described": described, "cases": "\n".join(cases)}


_ZSH = r"""#compdef orchesjob
# zsh completion for orchesjob (written by `orchesjob completion zsh`)
_orchesjob() {
  local -a commands
  commands=(%(described)s)
  if (( CURRENT == 2 )); then
    _describe -t commands 'orchesjob command' commands
    return
  fi
  local cmd=$words[2]
  shift words
  (( CURRENT-- ))
  case $cmd in
%(cases)s
  esac
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _orchesjob "$@"
else
  compdef _orchesjob orchesjob
fi
"""


# -- fish -----------------------------------------------------------------------------------------------------------
def _fq(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish() -> str:
    names = " ".join(COMMANDS)
    lines = [
        "# fish completion for orchesjob (written by `orchesjob completion fish`)",
        "complete -c orchesjob -f",
    ]
    for name, (summary, _, _) in COMMANDS.items():
        lines.append(
            "complete -c orchesjob -n 'not __fish_seen_subcommand_from %s' -a %s -d %s" % (names, name, _fq(summary))
        )
    for name, (_, spec, takes_command) in COMMANDS.items():
        when = "-n '__fish_seen_subcommand_from %s'" % name
        short = {long: s for s, long in SHORT.get(name, {}).items()}
        for flag, (kind, metavar, text) in spec.items():
            parts = ["complete -c orchesjob", when]
            if flag in short:
                parts.append("-s %s" % short[flag][1:])
            parts.append("-l %s" % flag[2:])
            if kind != SWITCH:
                if metavar in _DIRS:
                    parts.append("-r -a '(__fish_complete_directories)'")
                elif words(metavar):
                    parts.append("-x -a %s" % _fq(_values(metavar)))
                else:
                    parts.append("-x")
            parts.append("-d %s" % _fq(text))
            lines.append(" ".join(parts))
        if name in POSITIONAL and words(POSITIONAL[name][0]):
            lines.append(
                "complete -c orchesjob %s -a %s -d %s"
                % (when, _fq(_values(POSITIONAL[name][0])), _fq(POSITIONAL[name][2]))
            )
        if takes_command:
            lines.append(
                "complete -c orchesjob -n '__fish_seen_subcommand_from %s; and contains -- -- (commandline -opc)' "
                "-a '(__fish_complete_subcommand)'" % name
            )
    return "\n".join(lines) + "\n"
