"""The embedded demo: two providers' SQLite databases, a local datalake, the reference receiver."""

import datetime as dt
import random
import shutil
import sqlite3
from pathlib import Path

TEMPLATE = Path(__file__).with_name("prequel.yaml")
STATE_DIR = Path(".prequel")
"""The one ignored folder the demo (and the repo's dagster.yaml) keep local state in."""

FIRST_NAMES = ["Ann", "Bob", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
LAST_NAMES = ["Lee", "Ng", "Okafor", "Silva", "Berg", "Rossi", "Kim", "Haddad", "Novak", "Diaz"]
BASE_TIME = dt.datetime(2026, 11, 1, 9, 0, 0)


def demo_dir(root: Path | None = None) -> Path:
    return (root or Path.cwd()) / STATE_DIR / "demo"


def _ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def write_demo_data(directory: Path, *, users: int = 400, orders: int = 1500, customers: int = 250) -> Path:
    """Fresh demo databases and config in ``directory``; returns the config path."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    rng = random.Random(42)

    acme = sqlite3.connect(directory / "acme.db")
    acme.executescript(
        """
        CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, first_name TEXT, last_name TEXT,
                            is_pro BOOLEAN NOT NULL DEFAULT 0, updated_at DATETIME NOT NULL,
                            is_deleted BOOLEAN NOT NULL DEFAULT 0);
        CREATE TABLE orders (order_id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, amount REAL NOT NULL,
                             created_at DATETIME NOT NULL);
        """
    )
    acme.executemany(
        "INSERT INTO users VALUES (?,?,?,?,?,?,0)",
        [
            (
                i,
                f"user{i}@acme.example",
                rng.choice(FIRST_NAMES),
                rng.choice(LAST_NAMES),
                rng.random() < 0.2,
                _ts(BASE_TIME + dt.timedelta(minutes=i)),
            )
            for i in range(1, users + 1)
        ],
    )
    acme.executemany(
        "INSERT INTO orders VALUES (?,?,?,?)",
        [
            (i, rng.randint(1, users), round(rng.uniform(5, 250), 2), _ts(BASE_TIME + dt.timedelta(seconds=30 * i)))
            for i in range(1, orders + 1)
        ],
    )
    acme.commit()
    acme.close()

    globex = sqlite3.connect(directory / "globex.db")
    globex.execute(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL, first_name TEXT, last_name TEXT, "
        "updated_at TEXT NOT NULL, is_deleted INTEGER NOT NULL DEFAULT 0)"
    )
    globex.executemany(
        "INSERT INTO customers VALUES (?,?,?,?,?,0)",
        [
            (
                i,
                f"c{i}@globex.example",
                rng.choice(FIRST_NAMES),
                rng.choice(LAST_NAMES),
                _ts(BASE_TIME + dt.timedelta(minutes=2 * i)),
            )
            for i in range(1, customers + 1)
        ],
    )
    globex.commit()
    globex.close()
    config = directory / "prequel.yaml"
    shutil.copy(TEMPLATE, config)
    return config


def apply_changes(directory: Path) -> dict[str, str]:
    """A day of activity at the sources: updates, inserts, soft deletes, new orders."""
    later = _ts(BASE_TIME + dt.timedelta(days=1))
    acme = sqlite3.connect(directory / "acme.db")
    acme.execute("UPDATE users SET email = 'renamed-' || email, updated_at = ? WHERE id <= 10", (later,))
    acme.execute("UPDATE users SET is_deleted = 1, updated_at = ? WHERE id IN (20, 21)", (later,))
    n = acme.execute("SELECT MAX(id) FROM users").fetchone()[0]
    acme.executemany(
        "INSERT INTO users VALUES (?,?,?,?,0,?,0)",
        [(n + i, f"new{i}@acme.example", "New", "User", later) for i in range(1, 6)],
    )
    m = acme.execute("SELECT MAX(order_id) FROM orders").fetchone()[0]
    acme.executemany("INSERT INTO orders VALUES (?,?,?,?)", [(m + i, 1, 120.0 + i, later) for i in range(1, 21)])
    acme.commit()
    acme.close()
    globex = sqlite3.connect(directory / "globex.db")
    globex.execute("UPDATE customers SET last_name = 'Moved', updated_at = ? WHERE id <= 3", (later,))
    globex.commit()
    globex.close()
    return {
        "acme": "10 users renamed, 2 soft-deleted, 5 new users, 20 new orders",
        "globex": "3 customers updated",
    }
