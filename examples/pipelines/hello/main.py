"""The smallest pipeline: a folder with only main.py. Run it with `kubeline run hello`."""

from kubeline import task

name = task.input("name", default="world")
greeting = f"Hello, {name}!"
print(greeting)
task.set_output("greeting", greeting)
