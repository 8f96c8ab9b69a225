"""The Book Blog: posts and comments over a SqlDatabase, its pages and WordPress-style JSON API."""
