//! Help texts, identical to etcd 3.4's `etcdctl` in v2 mode (`ETCDCTL_API=2`), minus
//! the v2 auth commands (`user`, `role`, `auth`), which this etcdctl does not implement.

/// `etcdctl`, `etcdctl help`, `etcdctl -h`.
pub const APP_HELP: &str = r#"NAME:
   etcdctl - A simple command line client for etcd.

USAGE:
   etcdctl [global options] command [command options] [arguments...]

VERSION:
   3.4.23

COMMANDS:
   backup          backup an etcd directory
   cluster-health  check the health of the etcd cluster
   mk              make a new key with a given value
   mkdir           make a new directory
   rm              remove a key or a directory
   rmdir           removes the key if it is an empty directory or a key-value pair
   get             retrieve the value of a key
   ls              retrieve a directory
   set             set the value of a key
   setdir          create a new directory or update an existing directory TTL
   update          update an existing key with a given value
   updatedir       update an existing directory
   watch           watch a key for changes
   exec-watch      watch a key for changes and exec an executable
   member          member add, remove and list subcommands
   help, h         Shows a list of commands or help for one command

GLOBAL OPTIONS:
   --debug                          output cURL commands which can be used to reproduce the request
   --no-sync                        don't synchronize cluster information before sending request
   --output simple, -o simple       output response in the given format (simple, `extended` or `json`) (default: "simple")
   --discovery-srv value, -D value  domain name to query for SRV records describing cluster endpoints
   --insecure-discovery             accept insecure SRV records describing cluster endpoints
   --peers value, -C value          DEPRECATED - "--endpoints" should be used instead
   --endpoint value                 DEPRECATED - "--endpoints" should be used instead
   --endpoints value                a comma-delimited list of machine addresses in the cluster (default: "http://127.0.0.1:2379,http://127.0.0.1:4001")
   --cert-file value                identify HTTPS client using this SSL certificate file
   --key-file value                 identify HTTPS client using this SSL key file
   --ca-file value                  verify certificates of HTTPS-enabled servers using this CA bundle
   --username value, -u value       provide username[:password] and prompt if password is not supplied.
   --timeout value                  connection timeout per request (default: 2s)
   --total-timeout value            timeout for the command execution (except watch) (default: 5s)
   --help, -h                       show help
   --version, -v                    print the version
"#;

/// `etcdctl member` (the subcommand list).
pub const MEMBER_APP_HELP: &str = r#"NAME:
   etcdctl member - member add, remove and list subcommands

USAGE:
   etcdctl member command [command options] [arguments...]

COMMANDS:
   list    enumerate existing cluster members
   add     add a new member to the etcd cluster
   remove  remove an existing member from the etcd cluster
   update  update an existing member in the etcd cluster

OPTIONS:
   --help, -h  show help
   
"#;

/// The help of a command (`etcdctl help <command>`, `etcdctl <command> -h`); member
/// subcommands are named `member list` etc.
pub fn command_help(name: &str) -> Option<&'static str> {
    match name {
        "backup" => Some(
            r#"NAME:
   etcdctl backup - backup an etcd directory

USAGE:
   etcdctl backup [command options]  

OPTIONS:
   --data-dir value        Path to the etcd data dir
   --wal-dir value         Path to the etcd wal dir
   --backup-dir value      Path to the backup dir
   --backup-wal-dir value  Path to the backup wal dir
   --with-v3               Backup v3 backend data
   
"#,
        ),
        "cluster-health" => Some(
            r#"NAME:
   etcdctl cluster-health - check the health of the etcd cluster

USAGE:
   etcdctl cluster-health [command options]  

OPTIONS:
   --forever, -f  forever check the health every 10 second until CTRL+C
   
"#,
        ),
        "mk" => Some(
            r#"NAME:
   etcdctl mk - make a new key with a given value

USAGE:
   etcdctl mk [command options] <key> <value>

OPTIONS:
   --in-order   create in-order key under directory <key>
   --ttl value  key time-to-live in seconds (default: 0)
   
"#,
        ),
        "mkdir" => Some(
            r#"NAME:
   etcdctl mkdir - make a new directory

USAGE:
   etcdctl mkdir [command options] <key>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#,
        ),
        "rm" => Some(
            r#"NAME:
   etcdctl rm - remove a key or a directory

USAGE:
   etcdctl rm [command options] <key>

OPTIONS:
   --dir               removes the key if it is an empty directory or a key-value pair
   --recursive, -r     removes the key and all child keys(if it is a directory)
   --with-value value  previous value
   --with-index value  previous index (default: 0)
   
"#,
        ),
        "rmdir" => Some(
            r#"NAME:
   etcdctl rmdir - removes the key if it is an empty directory or a key-value pair

USAGE:
   etcdctl rmdir <key>
"#,
        ),
        "get" => Some(
            r#"NAME:
   etcdctl get - retrieve the value of a key

USAGE:
   etcdctl get [command options] <key>

OPTIONS:
   --sort        returns result in sorted order
   --quorum, -q  require quorum for get request
   
"#,
        ),
        "ls" => Some(
            r#"NAME:
   etcdctl ls - retrieve a directory

USAGE:
   etcdctl ls [command options] [key]

OPTIONS:
   --sort           returns result in sorted order
   --recursive, -r  returns all key names recursively for the given path
   -p               append slash (/) to directories
   --quorum, -q     require quorum for get request
   
"#,
        ),
        "set" => Some(
            r#"NAME:
   etcdctl set - set the value of a key

USAGE:
   etcdctl set [command options] <key> <value>

DESCRIPTION:
   Set sets the value of a key.

   When <value> begins with '-', <value> is interpreted as a flag.
   Insert '--' for workaround:

   $ set -- <key> <value>

OPTIONS:
   --ttl value              key time-to-live in seconds (default: 0)
   --swap-with-value value  previous value
   --swap-with-index value  previous index (default: 0)
   
"#,
        ),
        "setdir" => Some(
            r#"NAME:
   etcdctl setdir - create a new directory or update an existing directory TTL

USAGE:
   etcdctl setdir [command options] <key>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#,
        ),
        "update" => Some(
            r#"NAME:
   etcdctl update - update an existing key with a given value

USAGE:
   etcdctl update [command options] <key> <value>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#,
        ),
        "updatedir" => Some(
            r#"NAME:
   etcdctl updatedir - update an existing directory

USAGE:
   etcdctl updatedir [command options] <key> <value>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#,
        ),
        "watch" => Some(
            r#"NAME:
   etcdctl watch - watch a key for changes

USAGE:
   etcdctl watch [command options] <key>

OPTIONS:
   --forever, -f        forever watch a key until CTRL+C
   --after-index value  watch after the given index (default: 0)
   --recursive, -r      returns all values for key and child keys
   
"#,
        ),
        "exec-watch" => Some(
            r#"NAME:
   etcdctl exec-watch - watch a key for changes and exec an executable

USAGE:
   etcdctl exec-watch [command options] <key> <command> [args...]

OPTIONS:
   --after-index value  watch after the given index (default: 0)
   --recursive, -r      watch all values for key and child keys
   
"#,
        ),
        "member" => Some(
            r#"NAME:
   etcdctl member - member add, remove and list subcommands

USAGE:
   etcdctl member [arguments...]
"#,
        ),
        "member list" => Some(
            r#"NAME:
   etcdctl member list - enumerate existing cluster members

USAGE:
   etcdctl member list  
"#,
        ),
        "member add" => Some(
            r#"NAME:
   etcdctl member add - add a new member to the etcd cluster

USAGE:
   etcdctl member add <name> <peerURL>
"#,
        ),
        "member remove" => Some(
            r#"NAME:
   etcdctl member remove - remove an existing member from the etcd cluster

USAGE:
   etcdctl member remove <memberID>
"#,
        ),
        "member update" => Some(
            r#"NAME:
   etcdctl member update - update an existing member in the etcd cluster

USAGE:
   etcdctl member update <memberID> <peerURLs>
"#,
        ),
        _ => None,
    }
}

/// `etcdctl help help` (urfave/cli prints its help command without a program name).
pub const HELP_HELP: &str = r#"NAME:
    - Shows a list of commands or help for one command

USAGE:
    [command]
"#;

/// `etcdctl member help` (differs from `etcdctl member`: urfave/cli's sub-app template).
pub const MEMBER_HELP: &str = r#"NAME:
   etcdctl member - member add, remove and list subcommands

USAGE:
   etcdctl member [global options] command [command options] [arguments...]

VERSION:
   3.4.23

COMMANDS:
   list    enumerate existing cluster members
   add     add a new member to the etcd cluster
   remove  remove an existing member from the etcd cluster
   update  update an existing member in the etcd cluster

GLOBAL OPTIONS:
   --help, -h  show help
"#;

/// `etcdctl member help help`.
pub const MEMBER_HELP_HELP: &str = r#"NAME:
   etcdctl member help - Shows a list of commands or help for one command

USAGE:
   etcdctl member help [command]
"#;
