"""Learners that act in the real env and the parts they share with the dream's."""

# what a real-env learner leaves beside its policy: {"real_steps": env steps it learnt
# from, ...}; compare_controllers charges them to it
SUMMARY_FILENAME = "summary.json"
