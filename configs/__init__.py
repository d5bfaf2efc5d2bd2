"""big_vision-style configs: `configs/<stage>.py:variant=<tiny|nano|pico|smoke>`."""
