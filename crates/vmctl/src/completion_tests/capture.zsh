# zsh -f capture.zsh FPATH_DIR LINE: prints the candidates zsh's completion
# system is given for LINE when completion is asked for, one a line. An
# interactive zsh runs on a pseudo-terminal (zpty); a compadd wrapper
# reports each candidate, and a widget marks the end of the completion, so
# nothing more is typed while it runs.
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1='' PS2='' RPS1=''"
zpty -w z "fpath=(${(q)1} \$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w z "zstyle ':completion:*' list-grouped false; zstyle ':completion:*' insert-tab false"
zpty -w z 'compadd() {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi
  local -a __hits
  builtin compadd -A __hits "$@"
  local h; for h in $__hits; do print -r -- "<HIT:$h>"; done
  builtin compadd "$@"
}'
zpty -w z 'capture-complete() { zle complete-word; print -r -- "<END""-OF-COMPLETION>" }'
zpty -w z 'zle -N capture-complete; bindkey "^X" capture-complete'
zpty -w z "print RE''ADY"
local out
zpty -r z out '*READY*' || exit 2
zpty -w -n z "$2"$'\C-x'
zpty -r z out '*<END-OF-COMPLETION>*' || exit 2
zpty -d z
# What follows each "<HIT:", up to its ">"; the "x" keeps a hit at the very
# start from being taken for the text before the first one.
local -a parts
parts=("${(@s.<HIT:.)${:-x$out}}")
(( $#parts > 1 )) && print -r -l -- ${parts[2,-1]%%>*}
exit 0
