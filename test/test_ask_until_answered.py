"""A graph request that goes unanswered (its server restarting, or a node still coming up) is sent
again with growing waits until a deadline; the evaluator's parameter reads and the task runner's
service calls share this loop (nodes/common.py)."""

from concurrent.futures import Future

from vla_policy_node.nodes.common import ask_until_answered


class Server:
    """Answers only the request numbered `answers_from` and later; records what happened."""

    def __init__(self, answers_from: int, ready: bool = True):
        self.answers_from, self.ready, self.sent, self.dropped = answers_from, ready, 0, []

    def send(self) -> Future:
        self.sent += 1
        future = Future()
        if self.sent >= self.answers_from:
            future.set_result(f"answer to request {self.sent}")
        return future


def test_a_lost_request_is_sent_again_with_doubling_waits_until_answered():
    server = Server(answers_from=3)
    future, sent = ask_until_answered(lambda remaining: True, server.send, timeout_s=10.0, first_attempt_s=0.02,
                                      unanswered=lambda f, waited: server.dropped.append(waited))
    assert future.result() == "answer to request 3" and sent == 3
    assert server.dropped == [0.02, 0.04]             # the two lost requests, each waited twice as long


def test_no_answer_before_the_deadline_gives_none_with_the_requests_sent():
    server = Server(answers_from=10 ** 6)
    future, sent = ask_until_answered(lambda remaining: True, server.send, timeout_s=0.3, first_attempt_s=0.02)
    assert future is None and sent >= 1


def test_a_server_that_never_appears_is_never_sent_a_request():
    server = Server(answers_from=1)
    future, sent = ask_until_answered(lambda remaining: False, server.send, timeout_s=1.0)
    assert future is None and sent == 0 == server.sent
