"""What the ``casaguard`` command's exit status means, for every sub-command.

One table, so ``probe``'s "unsafe", ``run``'s "a task failed" and
``restore-journal``'s "refused" are the same number by construction: a
pipeline's shell can test ``$? -eq 1`` for "look at this MS" whatever ran.
"""

from __future__ import annotations

#: Success: the task ran, the MS is safe, the restore was done.
EXIT_OK = 0
#: A guarded task failed, or an MS is unsafe (a pending journal, a probe finding).
EXIT_FAILED = 1
#: Bad input or a failure of casaguard itself: nothing was judged.
EXIT_BAD_INPUT = 2
#: Ctrl-C or SIGTERM: children were killed and the journal had its say.
EXIT_INTERRUPTED = 130
#: The reader of stdout went away (``| head``): what a shell reports for death by SIGPIPE.
EXIT_BROKEN_PIPE = 141

#: The probe's and repair's words for the same statuses.
EXIT_SAFE = EXIT_OK
EXIT_UNSAFE = EXIT_FAILED
#: ``restore-journal`` refused (the journal or the MS is not what it should be).
EXIT_REFUSED = EXIT_FAILED
