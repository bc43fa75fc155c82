"""The demo's mentoring program, as data: who takes part, who connected which calendar, and
version 1 of every session (the runner changes them step by step)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

PEOPLE: dict[str, dict[str, str]] = {
    "ada": {"user_id": "demo-ada", "email": "ada@example.com", "name": "Ada Lovelace", "role": "mentor"},
    "margaret": {"user_id": "demo-margaret", "email": "margaret@example.com", "name": "Margaret Hamilton",
                 "role": "mentor"},
    "alan": {"user_id": "demo-alan", "email": "alan@example.com", "name": "Alan Turing", "role": "mentee",
             "timezone": "Europe/London"},
    "grace": {"user_id": "demo-grace", "email": "grace@example.com", "name": "Grace Hopper", "role": "mentee",
              "timezone": "America/Chicago"},
    "katherine": {"user_id": "demo-katherine", "email": "katherine@example.com", "name": "Katherine Johnson",
                  "role": "mentee"},
}

#: People who connected a calendar, and which one; everyone else gets emailed invites.
CONNECTED: dict[str, str] = {"ada": "google", "alan": "google", "katherine": "outlook"}


def program(monday: date) -> dict[str, dict[str, Any]]:
    """Version 1 of every session: a group kickoff and three one-to-ones, one of them hybrid."""

    def at(day: int, hour: int, zone: str) -> str:
        return datetime.combine(monday + timedelta(days=day), time(hour), ZoneInfo(zone)).isoformat()

    def session(sid: str, title: str, day: int, hour: int, zone: str, who: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "id": sid, "version": 1, "title": title, "program": "Spring Cohort (demo)",
            "start": at(day, hour, zone), "end": at(day, hour + 1, zone), "timezone": zone,
            "status": "scheduled", "meeting_url": f"https://video.example.com/{sid}",
            "agenda_html": "<p>Introductions and what you want from the program</p>",
            "view_url": f"https://platform.example/sessions/{sid}",
            "participants": [PEOPLE[name] for name in who], **extra,
        }

    return {
        "kickoff": session("kickoff", "Kickoff: meet your cohort", 0, 10, "America/New_York",
                           ["ada", "margaret", "alan", "grace", "katherine"]),
        "alan": session("alan-1", "Session 1: Setting goals", 1, 15, "America/New_York", ["ada", "alan"]),
        "grace": session("grace-1", "Session 1: Setting goals", 2, 12, "America/Chicago", ["ada", "grace"],
                         location="Room 4.2, Innovation Hub"),
        "katherine": session("katherine-1", "Session 1: Setting goals", 3, 11, "America/New_York",
                             ["margaret", "katherine"]),
    }


def next_version(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**data, **changes, "version": data["version"] + 1}


def later(data: dict[str, Any], delta: timedelta) -> dict[str, str]:
    return {k: (datetime.fromisoformat(data[k]) + delta).isoformat() for k in ("start", "end")}


def next_monday() -> date:
    today = datetime.now(ZoneInfo("America/New_York")).date()
    return today + timedelta(days=7 - today.weekday())
