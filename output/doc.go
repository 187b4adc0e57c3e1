// Package output delivers a byte stream, such as a pipesnap snapshot, to
// a path named on the command line, safely for a program that runs as
// root and writes what other users' pipes held (secrets, possibly).
//
// Open decides what the path is from file descriptors, never from a
// second look at the path, and Commit or Abort ends the delivery:
//
//   - Nothing there: the stream goes to a new regular file, mode 0600,
//     that has no name until Commit (O_TMPFILE), fsynced and then linked
//     under the path. A process killed at any instant, even by SIGKILL,
//     leaves no file and no temporary name behind, and no reader ever
//     sees a partial file under the path. An entry that appears at the
//     path meanwhile is never replaced (linkat does not replace), unless
//     Options.Replace. On a filesystem without O_TMPFILE the file is
//     written under a hidden temporary name next to the path
//     (.NAME.*.tmp) and renamed or linked into place; there, and only
//     there, a SIGKILL can leave that temporary file.
//   - A regular file: refused (ErrExists) unless Options.Replace, which
//     renames the new file over it, so the old one stays whole until the
//     new one is complete. Its owner does not matter: the new file is a
//     new inode of the caller's.
//   - A FIFO or a character device: written in place (a file renamed over
//     /dev/null would replace the device), but only if it belongs to root
//     or to one of Options.Owners (by default InvokingUsers: the real uid
//     and, under sudo, SUDO_UID). Anything else is refused with
//     ErrForeignOwner unless Options.AllowForeign: root writing into a
//     FIFO another user created hands that user the whole stream. The
//     check is made on a descriptor (O_PATH) of the inode before it is
//     opened for writing, and that very inode is then reopened, so no
//     rename or symlink swap between check and write is seen, and a
//     refused FIFO's reader sees no writer at all (not even an EOF). A
//     FIFO is opened without blocking: ErrNoReader when no one reads it.
//   - A symbolic link: followed only when it leads to a FIFO or character
//     device (/dev/stdout), with the owner check on what it leads to;
//     otherwise refused (ErrSymlink), even with Replace, since renaming
//     over a link replaces the link and not the file it points to.
//   - A directory, socket, block device or anything else: ErrKind.
//
// Errors are *Error values wrapping one of the sentinels, with the path,
// the kind of file found and, for ErrForeignOwner, its owner, so that a
// command can word its own message and choose its exit status. The
// package prints nothing.
package output
