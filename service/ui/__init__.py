"""The task dashboard's static files (index.html, app.js, app.css), served at ``/ui`` by
service/api/dashboard.py. Plain HTML, CSS and JavaScript: no build step, nothing from a CDN."""
