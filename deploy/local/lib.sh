# Shared by the deploy/local scripts.

# Closes every inherited descriptor above 2 in the current (sub)shell, so a daemon started from it
# does not hold a caller's pipe open (a CI runner or a terminal waiting for end of output).
# Use inside a subshell: ( close_inherited_fds; exec daemon ... )
close_inherited_fds() {
  local fd
  for fd in $(ls "/proc/$BASHPID/fd"); do
    [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
  done
  return 0
}
