"""ISO-8601 durations (``P30D``, ``PT12H``, ``P1M``, ``P1Y2M10DT2H30M``) for recency filters and
deduplication periods, and the instant a duration before *now*.

Years and months are calendar units (``P1M`` before 31 March is 28 or 29 February: the day is
clamped to the month's length); weeks, days, hours, minutes and seconds are fixed lengths (a day
is 24 hours, in UTC). A period is always measured back from now: with ``P1M``, a subject delivered
on 31 January may go out again on 1 March (1 March minus a month is 1 February), not on 29 February
(29 February minus a month is 29 January).
"""

import calendar
import datetime as dt
import re
from dataclasses import dataclass

_PATTERN = re.compile(
    r"P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:[.,]\d+)?)S)?)?"
)


@dataclass(frozen=True)
class Duration:
    months: int  # years are 12 months
    fixed: dt.timedelta  # weeks, days, hours, minutes, seconds

    def before(self, moment: dt.datetime) -> dt.datetime:
        """``moment`` minus this duration: calendar months first (day clamped), then the fixed part."""
        if self.months:
            index = moment.year * 12 + (moment.month - 1) - self.months
            year, month = divmod(index, 12)
            day = min(moment.day, calendar.monthrange(year, month + 1)[1])
            moment = moment.replace(year=year, month=month + 1, day=day)
        return moment - self.fixed


def parse_duration(text: str) -> Duration:
    """``"P30D"`` -> :class:`Duration`; raises ``ValueError`` saying what a duration looks like."""
    normal = text.strip().upper() if isinstance(text, str) else ""
    match = _PATTERN.fullmatch(normal)
    if match is None or normal in ("P", "PT") or normal.endswith("T"):
        raise ValueError(f'{text!r} is not an ISO-8601 duration; write e.g. "P30D" (30 days), "P2W", "P1M" or "PT12H"')
    parts = {k: v for k, v in match.groupdict().items() if v is not None}
    months = int(parts.get("years", 0)) * 12 + int(parts.get("months", 0))
    fixed = dt.timedelta(
        weeks=int(parts.get("weeks", 0)),
        days=int(parts.get("days", 0)),
        hours=int(parts.get("hours", 0)),
        minutes=int(parts.get("minutes", 0)),
        seconds=float(parts.get("seconds", "0").replace(",", ".")),
    )
    if months == 0 and fixed <= dt.timedelta(0):
        raise ValueError(f'{text!r} is a zero duration; give a length such as "P30D"')
    return Duration(months, fixed)
