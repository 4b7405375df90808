"""`make bench`: each section compares dashtune with a baseline and prints both side by side."""
