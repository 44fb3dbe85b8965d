"""The view as a person meets it: rendered by the official AppBridge in headless Chromium, fed with the real
server's results; every button sends its tools/call through the host to the real server, and what comes back is
shown. See conftest.py for the host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Locator, expect

from browser.conftest import SCREENSHOTS, Host, Person

pytestmark = pytest.mark.anyio
CRANE = {"prompt": "a paper crane, studio light", "n": 2, "seed": 7, "aspect_ratio": "4:5"}


def images_of(result: Any) -> list[dict[str, Any]]:
    return list(json.loads(result.content[0].text)["images"])


def batch(host: Host, index: int = 0) -> Locator:
    """A section of the view, newest first."""
    return host.view.locator(".batch").nth(index)


async def fact(card: Locator, term: str) -> str:
    return await card.locator(".facts div").filter(has=card.page.locator(f"dt:text-is('{term}')")).locator(
        "dd").inner_text()


async def loaded(image: Locator) -> int:
    """The natural width of an image once decoded (0 while it is not)."""
    await expect(image).to_have_js_property("complete", True)
    return int(await image.evaluate("i => i.naturalWidth"))


async def screenshot(host: Host, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await host.page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


async def test_every_image_of_the_call_is_shown_with_its_details(open_host):
    async with open_host() as host:
        made = images_of(await host.show("generate_image", CRANE))
        cards = batch(host).locator(".card")
        await expect(cards).to_have_count(2)
        await expect(host.view.locator("#status")).to_have_text("2 images ready.")
        await expect(batch(host).locator("h2")).to_have_text("Generated: “a paper crane, studio light”")
        for i, image in enumerate(made):
            card = cards.nth(i)
            picture = card.locator(".frame img")
            await expect(picture).to_have_attribute("alt", CRANE["prompt"])
            scale = 512 / max(image["width"], image["height"])  # the thumbnail in the result, not the file
            assert abs(await loaded(picture) - image["width"] * scale) <= 1
            assert (await picture.bounding_box())["width"] >= 240  # large enough to judge
            await expect(card.locator(".prompt")).to_have_text(CRANE["prompt"])
            await expect(card.locator(".path code")).to_have_text(image["path"])
            await expect(card.locator(".path .file")).to_have_text(Path(image["path"]).name)
            assert await fact(card, "Seed") == str(7 + i)
            assert await fact(card, "Size") == f"{image['width']}×{image['height']}"
            assert image["width"] / image["height"] == pytest.approx(4 / 5, abs=0.03)
            assert await fact(card, "Provider") == "sandbox · low"
            assert await fact(card, "Cost") == "$0.000"
            for name in ("Variations", "Edit…", "Use as reference", "Compare", "Hide", "Final (high tier)",
                         "Copy the path of", "Pick"):
                await expect(card.get_by_role("button", name=name)).to_be_visible()
            await expect(card.get_by_role("button", name="Final (high tier)")).to_contain_text("$0.000")
            await expect(card.locator(".final-note")).to_have_text(
                "Free on the sandbox: an offline placeholder, nothing is charged.")
        sizes = await host.page.evaluate("() => host.sizes")
        assert sizes and sizes[-1]["height"] > 400  # the host was told the view's height
        # (the fixture then checks: no script error, no CSP violation, no network at all)


async def test_a_view_that_declared_nothing_would_show_no_image_and_says_so(open_host):
    """The host's CSP comes from the view's own declaration: without it no image loads (as in the MCP Inspector),
    and the view says so in words instead of an empty box. With it (every other test), they load."""
    async with open_host() as host:
        host.errors_expected = True  # the blocked images are reported as console errors
        made = images_of(await host.show("generate_image", CRANE, declared=False))
        broken = batch(host).locator(".broken")
        await expect(broken).to_have_count(2)
        await expect(broken.first).to_contain_text("could not be shown here")
        await expect(broken.first).to_contain_text(made[0]["path"])
        assert any("Content Security Policy" in e for e in host.console_errors), host.console_errors


async def test_placeholders_keep_the_images_shape_so_nothing_jumps(open_host):
    async with open_host() as host:
        await host.mount()
        await host.page.evaluate("args => host.toolInput(args)", {"prompt": "a dune", "aspect_ratio": "16:9"})
        pending = batch(host).locator(".frame.pending")
        await expect(pending).to_have_count(1)
        await expect(host.view.locator("#status")).to_have_text("Making 1 image…")
        before = await pending.bounding_box()
        result = await host.mcp.call_tool("generate_image", {"prompt": "a dune", "aspect_ratio": "16:9"})
        await host.page.evaluate("r => host.toolResult(r)", result.model_dump(by_alias=True, exclude_none=True,
                                                                              mode="json"))
        frame = batch(host).locator(".frame").first
        await expect(frame.locator("img")).to_have_count(1)
        after = await frame.bounding_box()
        assert abs(after["height"] - before["height"]) < 1 and abs(after["width"] - before["width"]) < 1


async def test_variations_call_generate_with_the_same_prompt_and_the_next_seeds(open_host):
    async with open_host() as host:
        await host.show("generate_image", CRANE)
        await batch(host).locator(".card").first.get_by_role("button", name="Variations").click()
        await expect(host.view.locator(".batch")).to_have_count(2)
        await expect(batch(host).locator(".frame img")).to_have_count(2)
        assert await host.calls_of("generate_image") == [
            {"prompt": CRANE["prompt"], "aspect_ratio": "4:5", "n": 2, "seed": 9}]
        seeds = [await fact(batch(host).locator(".card").nth(i), "Seed") for i in range(2)]
        assert seeds == ["9", "10"]
        await expect(batch(host).locator("h2")).to_contain_text("seeds 9–10")
        await expect(host.view.locator("#status")).to_contain_text("2 images ready")
        new_paths = [await c.text_content() for c in await batch(host).locator(".path code").all()]
        context = await host.page.evaluate("() => host.modelContext")
        assert all(p in context["content"][0]["text"] for p in new_paths)  # the model hears what was made


async def test_edit_asks_for_the_change_then_edits_that_file(open_host):
    async with open_host() as host:
        source = images_of(await host.show("generate_image", {"prompt": "a teapot"}))[0]["path"]
        card = batch(host).locator(".card").first
        edit = card.get_by_role("button", name="Edit…")
        await edit.click()
        await expect(edit).to_have_attribute("aria-expanded", "true")
        field = card.get_by_label("Describe the change")
        await expect(field).to_be_focused()
        await field.press("Escape")  # closes, back on the button
        await expect(field).to_be_hidden()
        await expect(edit).to_be_focused()
        await edit.press("Enter")  # the keyboard alone
        await field.fill("make the teapot cobalt blue")
        await field.press("Enter")
        await expect(host.view.locator(".batch")).to_have_count(2)
        await expect(batch(host).locator("h2")).to_have_text("Edit: “make the teapot cobalt blue”")
        assert await loaded(batch(host).locator(".frame img")) > 0
        assert await host.calls_of("edit_image") == [{"prompt": "make the teapot cobalt blue", "image": source}]


async def test_references_collect_two_to_four_images_then_compose(open_host):
    async with open_host() as host:
        made = images_of(await host.show("generate_image", {**CRANE, "n": 4}))
        await batch(host).locator(".card").first.get_by_role("button", name="Variations").click()
        await expect(host.view.locator(".batch")).to_have_count(2)
        cards = batch(host, 1).locator(".card")
        tray = host.view.locator("#tray")
        await expect(tray).to_be_hidden()
        await cards.nth(2).get_by_role("button", name="Use as reference").click()
        await cards.nth(0).get_by_role("button", name="Use as reference").click()
        await expect(cards.nth(2).get_by_role("button", name="Reference 1 ✓")).to_have_attribute("aria-pressed",
                                                                                                  "true")
        await expect(tray).to_be_visible()
        compose = tray.get_by_role("button", name="Compose")
        await expect(compose).to_be_disabled()  # no prompt yet
        await cards.nth(1).get_by_role("button", name="Use as reference").click()
        await cards.nth(3).get_by_role("button", name="Use as reference").click()
        await expect(tray.locator("#tray-hint")).to_have_text("4 references: the most compose_images takes.")
        spare = batch(host).locator(".card").first.get_by_role("button", name="Use as reference")
        await expect(spare).to_be_disabled()  # a fifth is refused
        await tray.get_by_role("button", name="Remove image 4 from the references").click()
        await expect(spare).to_be_enabled()
        await tray.get_by_label("What should the new image show?").fill("the crane from image 1 on image 2")
        await compose.scroll_into_view_if_needed()  # the person is down at the tray; the new batch goes on top
        await expect(batch(host).locator("h2")).not_to_be_in_viewport()
        await compose.click()
        await expect(host.view.locator(".batch")).to_have_count(3)
        await expect(batch(host).locator("h2")).to_be_in_viewport()  # scrolled to, in the host's page too
        await expect(batch(host).locator("h2")).to_contain_text("Composed from 3 references")
        assert await loaded(batch(host).locator(".frame img")) > 0
        picked = [made[2]["path"], made[0]["path"], made[1]["path"]]
        assert await host.calls_of("compose_images") == [{"prompt": "the crane from image 1 on image 2",
                                                          "images": picked}]
        await expect(tray).to_be_hidden()


@pytest.mark.parametrize("approve", [False, True])
async def test_final_goes_through_the_persons_approval(open_host, approve):
    person = Person(approve)
    async with open_host(provider="openrouter", person=person) as host:
        made = images_of(await host.show("generate_image", {"prompt": "the launch poster", "seed": 3}))
        card = host.view.locator(f'.card[data-path="{made[0]["path"]}"]')
        final = card.get_by_role("button", name="Final (high tier)")
        await expect(final).to_have_text("Final (high tier)· $0.040")  # the quoted price, before any press
        await expect(card.locator(".final-note")).to_have_text(
            "You are asked to approve $0.040 before anything is spent.")
        assert await final.evaluate("b => getComputedStyle(b).color") != await card.get_by_role(
            "button", name="Variations").evaluate("b => getComputedStyle(b).color")  # looks unlike the free ones
        await final.click()
        await expect(host.view.locator(".batch")).to_have_count(2)
        assert await host.calls_of("generate_image") == [{"prompt": "the launch poster", "tier": "high", "seed": 3}]
        assert await host.calls_of("final_price") == [{}]
        assert len(person.asked) == 1 and "$" in person.asked[0]  # the server asked, with the price
        models = [r.json["model"] for r in host.fake.completions]
        if approve:
            assert models == ["black-forest-labs/flux.2-klein-4b", "bytedance-seed/seedream-4.5"]
            await expect(batch(host).locator(".badge")).to_have_text("final")
            assert await fact(batch(host).locator(".card"), "Provider") == "openrouter · high"
        else:
            assert models == ["black-forest-labs/flux.2-klein-4b"]  # nothing was sent, nothing spent
            await expect(card.get_by_role("alert")).to_contain_text("declined the high-tier spend")
            await expect(batch(host).get_by_role("alert")).to_contain_text("declined")


async def test_final_from_a_host_that_cannot_ask_is_refused_not_bypassed(open_host):
    async with open_host(provider="openrouter") as host:  # no elicitation: the server cannot ask the person
        made = images_of(await host.show("generate_image", {"prompt": "the launch poster"}))
        card = host.view.locator(f'.card[data-path="{made[0]["path"]}"]')
        await expect(card.locator(".final-note")).to_contain_text("this host cannot ask you")
        await card.get_by_role("button", name="Final (high tier)").click()
        await expect(card.get_by_role("alert")).to_contain_text("FLUX_KLEIN_HIGH_TIER")
        assert [r.json["model"] for r in host.fake.completions] == ["black-forest-labs/flux.2-klein-4b"]


async def test_full_size_opens_in_the_lightbox_through_the_host(open_host):
    async with open_host() as host:
        made = images_of(await host.show("generate_image", {"prompt": "a harbour at noon"}))
        card = batch(host).locator(".card").first
        assert await loaded(card.locator(".frame img")) == 512  # the result's thumbnail
        await card.get_by_role("button", name="Open full size: a harbour at noon").click()
        box = host.view.get_by_role("dialog")
        await expect(box).to_be_visible()
        picture = box.locator(".lb-stage img")
        await expect(picture).to_have_js_property("naturalWidth", 1024)  # the file, at 100 %
        assert await picture.evaluate("i => i.getBoundingClientRect().width") == 1024
        await expect(box.locator("#lb-actual")).to_have_text("100%")
        assert {"uri": made[0]["uri"]} in await host.page.evaluate("() => host.reads")
        await box.get_by_role("button", name="Close (Esc)").click()
        await expect(box).to_be_hidden()
        await expect(card.get_by_role("button", name="Open full size: a harbour at noon")).to_be_focused()


@pytest.mark.parametrize("granted", [True, False])
async def test_the_path_is_copied_or_selected_for_the_person(open_host, granted):
    """The view asks for clipboard-write; a host that grants it gets the path copied, one that does not gets it
    selected, ready for the person's own Ctrl+C."""
    async with open_host() as host:
        if granted:
            await host.page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        made = images_of(await host.show("generate_image", {"prompt": "a harbour at noon"}, clipboard=granted))
        card = batch(host).locator(".card").first
        await card.get_by_role("button", name="Copy the path of a harbour at noon").click()
        if granted:
            await expect(card.locator(".copy")).to_have_text("Copied")
            assert await host.page.evaluate("() => navigator.clipboard.readText()") == made[0]["path"]
        else:
            await expect(card.locator(".copy")).to_have_text("Selected: press Ctrl+C (⌘C on a Mac)")
            host.errors_expected = True  # Chromium reports the refused clipboard, and only that:
            assert all("Clipboard API has been blocked" in e for e in host.console_errors), host.console_errors
            field = card.get_by_label("The path, selected")
            await expect(field).to_have_value(made[0]["path"])
            await expect(field).to_be_focused()
            assert await field.evaluate("f => [f.selectionStart, f.selectionEnd]") == [0, len(made[0]["path"])]


async def test_the_gallery_picks_up_earlier_work(open_host):
    async with open_host() as host:
        earlier = images_of(await host.mcp.call_tool("generate_image", {"prompt": "an old lighthouse", "seed": 40}))
        await host.show("generate_image", {"prompt": "a new boat"})
        tiles = host.view.locator("#gallery-list .tile")
        await expect(tiles).to_have_count(2)
        assert (await host.calls_of("recent_images"))[0] == {"limit": 24, "query": "", "picked": False,
                                                             "hidden": False}  # app-only, called by the view
        await expect(host.view.locator("#gallery-count")).to_have_text("2 of 2 images")
        await host.view.locator("#gallery-list").get_by_role("button", name="Open full size: an old lighthouse").click()
        await host.view.get_by_role("button", name="Work on this").click()
        await expect(batch(host).locator("h2")).to_have_text("From the output folder")
        await expect(batch(host).locator(".path code")).to_have_text(earlier[0]["path"])
        assert await fact(batch(host).locator(".card"), "Seed") == "40"
        # Not the blurry gallery thumbnail: the card shows the file itself.
        await expect(batch(host).locator(".frame img")).to_have_js_property("naturalWidth", 1024)
        await batch(host).get_by_role("button", name="Variations").click()
        await expect(host.view.locator(".batch")).to_have_count(3)
        assert (await host.calls_of("generate_image"))[-1] == {"prompt": "an old lighthouse", "n": 2, "seed": 41}
        await expect(tiles).to_have_count(4)  # the gallery refreshed after the action


async def test_a_failed_call_is_shown_in_the_servers_words(open_host, tmp_path):
    async with open_host() as host:
        await host.show("edit_image", {"prompt": "brighter", "image": str(tmp_path / "missing.png")})
        alert = batch(host).get_by_role("alert")
        await expect(alert).to_contain_text("missing.png")
        await expect(batch(host).locator("h2")).to_have_text("Could not edit: “brighter”")  # not "Edited"
        await expect(host.view.locator("#status")).to_have_text("The call failed: nothing to show.")


async def test_the_hosts_theme_and_colours_are_followed(open_host):
    async with open_host() as host:
        await host.show("generate_image", CRANE, theme="dark")
        colour = "() => getComputedStyle(document.querySelector('.card')).backgroundColor"
        root = host.view.locator("html")
        await expect(root).to_have_attribute("data-theme", "dark")
        frame = host.page.frame(url="about:srcdoc")
        assert await frame.evaluate(colour) == "rgb(38, 38, 36)"  # the host's dark #262624
        await screenshot(host, "test-host-dark.png")
        await host.page.evaluate("() => host.theme('light')")
        await expect(root).to_have_attribute("data-theme", "light")
        assert await frame.evaluate(colour) == "rgb(250, 249, 245)"  # the host's light #faf9f5
        font = await frame.evaluate("() => getComputedStyle(document.body).fontFamily")
        assert "DejaVu Sans" in font


async def test_every_control_has_a_name_and_every_image_a_description(open_host):
    async with open_host() as host:
        await host.show("generate_image", CRANE)
        await expect(batch(host).locator(".frame img")).to_have_count(2)
        frame = host.page.frame(url="about:srcdoc")
        unnamed = await frame.evaluate("""() => [...document.querySelectorAll('button, input, textarea')]
            .filter(e => e.offsetParent !== null)
            .filter(e => !(e.getAttribute('aria-label') || e.textContent.trim() || e.labels?.length))
            .map(e => e.outerHTML)""")
        assert unnamed == []
        assert await frame.evaluate("() => [...document.images].every(i => i.alt || i.closest('button[aria-label]'))")


async def test_a_result_with_odd_field_types_is_still_shown(open_host):
    """Found by the fourth adversarial pass: a numeric model stopped the view at "Making 2 images..." (only a bad
    host could send it; the view must not care)."""
    async with open_host() as host:
        result = await host.show("generate_image", CRANE)
        summary = json.loads(result.content[0].text)
        summary.update(model=42, provider=None)
        odd = {"content": [{"type": "text", "text": json.dumps(summary)},
                           *[b.model_dump(by_alias=True, mode="json") for b in result.content[1:]]], "isError": False}
        await host.page.evaluate("args => host.toolInput(args)", CRANE)
        await host.page.evaluate("result => host.toolResult(result)", odd)
        await expect(batch(host).locator(".card")).to_have_count(2)
        await expect(batch(host).locator("header .muted")).to_contain_text("42 via")
        assert not host.console_errors
