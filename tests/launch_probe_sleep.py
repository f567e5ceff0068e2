"""Imported by a launched child: waits to be killed."""

import time

time.sleep(60)
