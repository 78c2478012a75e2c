"""One call's span: the step's fixed description (``spec``), the call from start to end
(``call``), its attempts (``retry``), failures, log events and attribute writes."""
