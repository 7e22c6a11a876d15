"""best.py: the best classifier a time budget allows, chosen on validation, with the leaderboard that says
what each step bought.

* :mod:`.clock`: the budget read and kept, the rates the steps are estimated by.
* :mod:`.search`: the steps, cheapest and most valuable first, and the choice.
* :mod:`.board`: the leaderboard, its CSV, Markdown and plot, and the journal of finished steps a later search
  reuses.
"""

from .clock import parse_duration
from .search import best

__all__ = ["best", "parse_duration"]
