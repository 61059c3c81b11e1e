"""SQL databases as sources and targets: PostgreSQL, MariaDB/MySQL and SQLite, through
SQLAlchemy Core with each value read and written as the database stores it."""
