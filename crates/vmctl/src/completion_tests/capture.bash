# bash capture.bash COMPLETION_FILE LINE: prints what the completion in
# COMPLETION_FILE offers for LINE, one a line, as bash would on a TAB.
source "$1"
line=$2
read -ra COMP_WORDS <<< "$line"
[[ $line == *" " || -z $line ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_LINE=$line
COMP_POINT=${#line}
_vmctl vmctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
printf '%s\n' "${COMPREPLY[@]}"
