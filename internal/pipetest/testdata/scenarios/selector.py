# The reader of the select/poll scenarios (internal/pipetest/scenarios.go).
#
#   selector.py select        select.select on stdin, reads what comes
#   selector.py poll          select.poll on stdin, reads what comes
#   selector.py select-other  select.select on fd 3 only: stdin is never read
#
# Each exits at EOF of the fd it waits for.
import os
import select
import sys

mode = sys.argv[1]
if mode == "poll":
    p = select.poll()
    p.register(0, select.POLLIN)
    while True:
        p.poll()
        if not os.read(0, 65536):
            break
else:
    fd = 3 if mode == "select-other" else 0
    while True:
        select.select([fd], [], [])
        if not os.read(fd, 65536):
            break
