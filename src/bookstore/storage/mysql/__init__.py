"""The MySQL/MariaDB adapter: the blog's SqlDatabase port through PyMySQL."""
