"""The web console: static HTML/CSS/JS served at /console, talking to the public API.

No build step: the browser loads plain ES modules and a vendored chart library
(uPlot, MIT, see static/vendor/uplot/LICENSE). The page keeps the API key in
localStorage and sends it as a Bearer token, exactly like any other API client.
"""
