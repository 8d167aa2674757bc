# bash completion for kvmserver: options (`kvmserver --help`), their values where they name files,
# directories, variables or choices, the commands run/snapshot/serve/inspect/doctor, and after `run` the
# program and, through bash-completion's _command_offset when loaded, the program's own arguments.
# Works in a plain bash too (tests/packaging/run.sh checks it there).

_kvmserver_flags="-h --help --version --print-config -A --allow-all --stats -v --verbose -e --ephemeral
  --allow-net --verify --reopen-changed-files"
# Options whose value may follow after a space (`-t 4`) or `=`.
_kvmserver_valued="--config --volume --env --cwd --timeout --max-memory --max-processes --max-threads
  --max-fds --max-tmp-size --max-pending-signals --max-epoll-watches --max-timers --max-address-space
  -t --threads --allow-listen --allow-connect --max-request-time --max-request-memory
  --reset-full-above -w --warmup --warmup-path --max-boot-time --metrics --isolate --listen
  --max-header-bytes --max-header-time --max-request-body -o --output --snapshot-on-ready"
# Options whose value must be joined with `=` (`--allow-read=/srv`); bare, they mean "all" or "on".
_kvmserver_optional="--allow-read --allow-write --allow-env --jail --seccomp"

_kvmserver_takes_value() {  # OPTION: does a separate next word belong to it?
  [[ " ${_kvmserver_valued//$'\n'/ } " == *" $1 "* ]]
}

# Completes CUR as a comma-separated list whose last item comes from `compgen $1`.
_kvmserver_list() {
  local head="" last=$2
  if [[ $2 == *,* ]]; then
    head="${2%,*},"
    last=${2##*,}
  fi
  local IFS=$'\n'
  COMPREPLY=($(compgen "$1" -- "$last"))
  COMPREPLY=("${COMPREPLY[@]/#/$head}")
  compopt -o nospace 2>/dev/null
}

_kvmserver_value() {  # OPTION CUR: completes the option's value
  local IFS=$'\n'  # file names may hold spaces
  case $1 in
    --config | -o | --output | --snapshot-on-ready) COMPREPLY=($(compgen -f -- "$2")); compopt -o filenames 2>/dev/null ;;
    --cwd | --volume) COMPREPLY=($(compgen -d -- "$2")); compopt -o filenames 2>/dev/null ;;
    --allow-read | --allow-write) _kvmserver_list -f "$2" ;;
    --allow-env) _kvmserver_list -e "$2" ;;
    --env) COMPREPLY=($(compgen -e -S = -- "$2")); compopt -o nospace 2>/dev/null ;;
    --isolate) COMPREPLY=($(compgen -W $'connection\nrequest' -- "$2")) ;;
    --jail | --seccomp) COMPREPLY=($(compgen -W $'on\noff' -- "$2")) ;;
    *) COMPREPLY=() ;;  # numbers and addresses: nothing to offer
  esac
}

_kvmserver() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]:-}
  COMPREPLY=()
  # `--opt=VALUE` reaches us as three words (= is in COMP_WORDBREAKS): --opt, =, VALUE.
  if [[ $cur == = ]]; then
    _kvmserver_value "$prev" ""
    return
  fi
  if [[ $prev == = ]] && ((COMP_CWORD >= 2)); then
    _kvmserver_value "${COMP_WORDS[COMP_CWORD - 2]}" "$cur"
    return
  fi
  local command="" i w
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=${COMP_WORDS[i]}
    if [[ $w == = ]]; then
      ((i++))  # the value of --opt=VALUE
    elif [[ $w == run ]]; then
      _kvmserver_program $((i + 1))
      return
    elif ((i == 1)) && [[ $w == snapshot || $w == serve || $w == inspect || $w == doctor ]]; then
      command=$w
    elif [[ $w == -* ]] && _kvmserver_takes_value "$w" && [[ ${COMP_WORDS[i + 1]:-} != = ]]; then
      ((i++))
    fi
  done
  if [[ $prev == -* ]] && _kvmserver_takes_value "$prev"; then
    _kvmserver_value "$prev" "$cur"
    return
  fi
  if [[ $cur == -* ]]; then
    local options="${_kvmserver_flags} ${_kvmserver_valued} ${_kvmserver_optional}"
    [[ $command == inspect ]] && options="--verify"
    [[ $command == doctor ]] && return  # it takes no arguments
    COMPREPLY=($(compgen -W "$options" -- "$cur"))
    return
  fi
  local IFS=$'\n'
  if ((COMP_CWORD == 1)); then
    COMPREPLY=($(compgen -W $'run\nsnapshot\nserve\ninspect\ndoctor' -- "$cur"))
  elif [[ $command == doctor ]]; then
    return
  elif [[ $command == serve || $command == inspect ]]; then
    COMPREPLY=($(compgen -f -- "$cur") $(compgen -W run -- "$cur"))
    compopt -o filenames 2>/dev/null
  else
    COMPREPLY=($(compgen -W run -- "$cur"))
  fi
}

# After `run [--]`: the program (a command or a path), then its own arguments.
_kvmserver_program() {
  local start=$1
  [[ ${COMP_WORDS[start]:-} == -- ]] && ((start < COMP_CWORD)) && ((start++))
  if ((COMP_CWORD == start)); then
    local IFS=$'\n'
    COMPREPLY=($(compgen -c -- "${COMP_WORDS[COMP_CWORD]}") $(compgen -f -- "${COMP_WORDS[COMP_CWORD]}"))
    compopt -o filenames 2>/dev/null
  elif declare -F _command_offset >/dev/null; then
    _command_offset "$start"
  else
    local IFS=$'\n'
    COMPREPLY=($(compgen -f -- "${COMP_WORDS[COMP_CWORD]}"))
    compopt -o filenames 2>/dev/null
  fi
}

complete -F _kvmserver kvmserver
