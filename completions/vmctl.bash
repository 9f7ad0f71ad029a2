# bash completion for vmctl(8): command words, each command's flags and
# their arguments, and the names of VMs as `vmctl status` lists them.
# The flags are checked against vmctl's own command table by
# crates/vmctl/src/completions.rs.

_vmctl_commands="console create help load log pause receive reload reset send show start status stop unpause wait"

# The command a (possibly abbreviated) word names, if it names only one.
_vmctl_command()
{
    local word=$1 c found=
    for c in $_vmctl_commands; do
        if [[ $c == "$word"* ]]; then
            [[ -n $found ]] && return 1
            found=$c
        fi
    done
    [[ -n $found ]] && printf '%s\n' "$found"
}

# Flags of a command, and which of them take an argument.
_vmctl_flags()
{
    case $1 in
    create) echo "-b -i -s" ;;
    show | status) echo "-j -r -v" ;;
    start) echo "-B -b -c -d -i -L -m -n -p -r -t --cmdline --initrd --ssh-key --user-data" ;;
    stop) echo "-a -f -w" ;;
    esac
}

_vmctl_takes_argument()
{
    case "$1 $2" in
    "create -b" | "create -i" | "create -s") return 0 ;;
    "start -B" | "start -b" | "start -d" | "start -i" | "start -m" | \
        "start -n" | "start -p" | "start -r" | "start -t" | \
        "start --cmdline" | "start --initrd" | "start --ssh-key" | \
        "start --user-data") return 0 ;;
    esac
    return 1
}

# VM names from `vmctl status` (the last column); with -r, running ones.
_vmctl_vms()
{
    vmctl status "$@" 2>/dev/null | awk 'NR > 1 { print $NF }'
}

_vmctl()
{
    local cur=${COMP_WORDS[COMP_CWORD]}
    local prev=${COMP_WORDS[COMP_CWORD - 1]}
    local i=1 word command=

    # vmctl's own -v, then the command word.
    while ((i < COMP_CWORD)); do
        word=${COMP_WORDS[i]}
        if [[ $word != -* ]]; then
            command=$(_vmctl_command "$word") || return 0
            break
        fi
        ((i++))
    done
    COMPREPLY=()
    if [[ -z $command ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "-v" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$_vmctl_commands" -- "$cur"))
        fi
        return 0
    fi

    # The argument of an option.
    if ((COMP_CWORD > i + 1)) && _vmctl_takes_argument "$command" "$prev"; then
        case $prev in
        -B) COMPREPLY=($(compgen -W "disk cdrom net" -- "$cur")) ;;
        -b | -d | -i | -r | --initrd | --ssh-key | --user-data)
            if [[ "$command $prev" == "start -i" ]]; then
                return 0
            fi
            COMPREPLY=($(compgen -f -- "$cur"))
            ;;
        -t) COMPREPLY=($(compgen -W "$(_vmctl_vms)" -- "$cur")) ;;
        esac
        return 0
    fi

    # Options come before the operands: are we still among them?
    local j=$((i + 1)) operands=0
    while ((j < COMP_CWORD)); do
        word=${COMP_WORDS[j]}
        if ((operands == 0)) && [[ $word == -* ]]; then
            _vmctl_takes_argument "$command" "$word" && ((j++))
        else
            ((operands++))
        fi
        ((j++))
    done
    if ((operands == 0)) && [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_vmctl_flags "$command")" -- "$cur"))
        return 0
    fi
    ((operands > 0)) && return 0

    case $command in
    console | pause | send | stop | wait)
        COMPREPLY=($(compgen -W "$(_vmctl_vms -r)" -- "$cur"))
        ;;
    show | start | status | unpause)
        COMPREPLY=($(compgen -W "$(_vmctl_vms)" -- "$cur"))
        ;;
    create | load)
        COMPREPLY=($(compgen -f -- "$cur"))
        ;;
    help) COMPREPLY=($(compgen -W "$_vmctl_commands" -- "$cur")) ;;
    log) COMPREPLY=($(compgen -W "brief verbose" -- "$cur")) ;;
    reset) COMPREPLY=($(compgen -W "all switches vms" -- "$cur")) ;;
    esac
    return 0
}

complete -F _vmctl vmctl
