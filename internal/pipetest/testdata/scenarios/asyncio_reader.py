# The reader of the python-asyncio scenarios (internal/pipetest/scenarios.go):
# an asyncio program reading the stdout of a subprocess through a pipe.
#
#   asyncio_reader.py idle PROGRAM [ARG...]  reads until EOF (the main thread
#                                           waits in epoll_wait meanwhile)
#   asyncio_reader.py full PROGRAM [ARG...]  reads once, then only awaits
#                                           asyncio.sleep(600): the pipe fills
#
# In "full" the transport keeps reading into the StreamReader's buffer until
# it holds twice its limit (128 KiB), then stops watching the pipe
# (pause_reading): from then on nothing reads it and the writer blocks.
import asyncio
import sys


async def main(mode, argv):
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    if mode == "full":
        await proc.stdout.read(4096)
        await asyncio.sleep(600)
        return
    while await proc.stdout.read(65536):
        pass
    await proc.wait()


asyncio.run(main(sys.argv[1], sys.argv[2:]))
