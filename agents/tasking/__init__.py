"""Tasks on agents: executing assignments, the built-in task types, final results.

* :mod:`.executor` — runs the assignments handed to an agent and reports them;
* :mod:`.builtin_tasks` — task types every task-taking agent knows;
* :mod:`.finals` — storing, announcing and reading back final results.
"""
