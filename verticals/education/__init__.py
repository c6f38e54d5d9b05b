"""Education template: grade students' answers to math word problems (correct/incorrect or a rubric score)."""

from verticals.education.template import EducationTemplate

__all__ = ["EducationTemplate"]
