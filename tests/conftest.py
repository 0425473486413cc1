import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# A shell that starts pytest in the background (`pytest &`, some CI runners) leaves SIGINT ignored; the Ctrl-C
# tests send SIGINT to this process and need Python's default handler, which raises KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)
