# fish completion for vmctl(8): command words, each command's flags and
# their arguments, and the names of VMs as `vmctl status` lists them.
# The flags are checked against vmctl's own command table by
# crates/vmctl/src/completions.rs.

# The command the first non-option word names (it may be abbreviated).
function __vmctl_command
    set -l words (commandline -opc)
    set -e words[1]
    for word in $words
        string match -q -- '-*' $word; and continue
        set -l found
        for c in console create help load log pause receive reload reset send show start status stop unpause wait
            string match -q -- "$word*" $c; and set -a found $c
        end
        test (count $found) -eq 1; and echo $found
        return
    end
end

function __vmctl_no_command
    set -l words (commandline -opc)
    for word in $words[2..-1]
        string match -q -- '-*' $word; or return 1
    end
    return 0
end

function __vmctl_using
    set -l command (__vmctl_command)
    test "$command" = $argv[1]
end

# VM names from `vmctl status` (the last column); with -r, running ones.
function __vmctl_vms
    vmctl status $argv 2>/dev/null | awk 'NR > 1 { print $NF }'
end

complete -c vmctl -f
complete -c vmctl -n __vmctl_no_command -s v -d 'Print debug messages'

complete -c vmctl -n __vmctl_no_command -a console -d 'Attach to the console of a VM'
complete -c vmctl -n __vmctl_no_command -a create -d 'Make a disk image'
complete -c vmctl -n __vmctl_no_command -a help -d 'List the commands or show the usage of one'
complete -c vmctl -n __vmctl_no_command -a load -d 'Read another configuration file'
complete -c vmctl -n __vmctl_no_command -a log -d 'Set the daemon log level'
complete -c vmctl -n __vmctl_no_command -a pause -d 'Pause a VM'
complete -c vmctl -n __vmctl_no_command -a receive -d 'Run a VM read from standard input'
complete -c vmctl -n __vmctl_no_command -a reload -d 'Read the configuration again'
complete -c vmctl -n __vmctl_no_command -a reset -d 'Forget VMs or switches'
complete -c vmctl -n __vmctl_no_command -a send -d 'Write a VM to standard output'
complete -c vmctl -n __vmctl_no_command -a show -d 'List VMs'
complete -c vmctl -n __vmctl_no_command -a start -d 'Start a VM'
complete -c vmctl -n __vmctl_no_command -a status -d 'List VMs'
complete -c vmctl -n __vmctl_no_command -a stop -d 'Stop a VM'
complete -c vmctl -n __vmctl_no_command -a unpause -d 'Let a paused VM run'
complete -c vmctl -n __vmctl_no_command -a wait -d 'Wait until a VM stops'

# create
complete -c vmctl -n '__vmctl_using create' -s b -r -F -d 'Base image'
complete -c vmctl -n '__vmctl_using create' -s i -r -F -d 'Image to copy'
complete -c vmctl -n '__vmctl_using create' -s s -x -d 'Size'
complete -c vmctl -n '__vmctl_using create' -F
complete -c vmctl -n '__vmctl_using load' -F

# status, show
for c in show status
    complete -c vmctl -n "__vmctl_using $c" -s j -d 'JSON output'
    complete -c vmctl -n "__vmctl_using $c" -s r -d 'Running VMs only'
    complete -c vmctl -n "__vmctl_using $c" -s v -d 'Details of each VM'
    complete -c vmctl -n "__vmctl_using $c" -x -a '(__vmctl_vms)'
end

# start
complete -c vmctl -n '__vmctl_using start' -s B -x -a 'disk cdrom net' -d 'Boot device'
complete -c vmctl -n '__vmctl_using start' -s b -r -F -d 'BIOS or kernel'
complete -c vmctl -n '__vmctl_using start' -s c -d 'Attach the console'
complete -c vmctl -n '__vmctl_using start' -s d -r -F -d 'Disk image'
complete -c vmctl -n '__vmctl_using start' -s i -x -d 'Number of interfaces'
complete -c vmctl -n '__vmctl_using start' -s L -d 'Local interface'
complete -c vmctl -n '__vmctl_using start' -s m -x -d 'Memory size'
complete -c vmctl -n '__vmctl_using start' -s n -x -d 'Switch'
complete -c vmctl -n '__vmctl_using start' -s p -x -d 'Number of CPUs'
complete -c vmctl -n '__vmctl_using start' -s r -r -F -d 'ISO image'
complete -c vmctl -n '__vmctl_using start' -s t -x -a '(__vmctl_vms)' -d 'Template VM'
complete -c vmctl -n '__vmctl_using start' -l cmdline -x -d 'Kernel command line'
complete -c vmctl -n '__vmctl_using start' -l initrd -r -F -d 'Initial RAM disk'
complete -c vmctl -n '__vmctl_using start' -l ssh-key -r -F -d 'SSH public key for cloud-init'
complete -c vmctl -n '__vmctl_using start' -l user-data -r -F -d 'cloud-init user data'
complete -c vmctl -n '__vmctl_using start' -x -a '(__vmctl_vms)'

# stop
complete -c vmctl -n '__vmctl_using stop' -s a -d 'All running VMs'
complete -c vmctl -n '__vmctl_using stop' -s f -d 'At once'
complete -c vmctl -n '__vmctl_using stop' -s w -d 'Wait until stopped'

for c in console pause send stop wait
    complete -c vmctl -n "__vmctl_using $c" -x -a '(__vmctl_vms -r)'
end
complete -c vmctl -n '__vmctl_using unpause' -x -a '(__vmctl_vms)'
complete -c vmctl -n '__vmctl_using log' -x -a 'brief verbose'
complete -c vmctl -n '__vmctl_using help' -x -a 'console create help load log pause receive reload reset send show start status stop unpause wait'
complete -c vmctl -n '__vmctl_using reset' -x -a 'all switches vms'
