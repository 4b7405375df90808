"""The HTTP client behind the CLI's user commands (files, jobs, deployments, chat).

It talks to a dashtune server over the public API only, like any other client, and
imports neither the server's services nor torch, so `dashtune jobs list` starts fast.
"""
